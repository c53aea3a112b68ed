/// How the F# properties run: FsCheck.Xunit's [<Property>], configured from the environment the
/// way the C# differential tests are (README's environment table).
module MmuSpec.FSharp.Running

open System
open System.Globalization
open Xunit
open FsCheck.Xunit

[<Literal>]
let MaxTestVariable = "MMUSPEC_MAX_TEST"

[<Literal>]
let ReplayVariable = "MMUSPEC_REPLAY"

/// What the environment asks of a run: MaxTest and, for a replay, FsCheck.Xunit's Replay token.
type RunSettings = { MaxTest: int; Replay: string option }

/// The settings MMUSPEC_MAX_TEST (`maxTest`) and MMUSPEC_REPLAY (`replay`) give, or why they cannot
/// be read. A replay token is "seed,gamma,size" as a failure prints it (FsCheck's parentheses
/// allowed): the run is then that one case, MaxTest 1.
let settings (defaultMaxTest: int) (maxTest: string option) (replay: string option) : Result<RunSettings, string> =
    let isSet = Option.filter (String.IsNullOrWhiteSpace >> not) >> Option.map _.Trim()
    let count =
        match isSet maxTest with
        | None -> Ok defaultMaxTest
        | Some v ->
            match Int32.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture) with
            | true, n when n > 0 -> Ok n
            | _ -> Error $"{MaxTestVariable}='{v}' is not a positive integer"
    let token =
        match isSet replay with
        | None -> Ok None
        | Some v ->
            let parts = v.Trim('(', ')').Split(',', StringSplitOptions.TrimEntries)
            let u64 (p: string) = UInt64.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture)
            match parts with
            | [| seed; gamma; size |] ->
                match u64 seed, u64 gamma, Int32.TryParse(size, NumberStyles.None, CultureInfo.InvariantCulture) with
                // The same bounds as the C# differential tests' reader (PropertyCheck.ParseReplay: odd gamma, size
                // 0..300, the deep tier's end size); this project does not reference the harness, so they are restated.
                | (true, _), (true, g), (true, n) when g % 2UL = 1UL && n <= 300 -> Ok(Some(String.Join(",", parts)))
                | _ -> Error $"{ReplayVariable}='{v}' is not 'seed,gamma,size' (integers, gamma odd, size 0..300, as a failure prints them)"
            | _ -> Error $"{ReplayVariable}='{v}' is not 'seed,gamma,size' (three integers, as a failure prints them)"
    match count, token with
    | Error e, _
    | _, Error e -> Error e
    | Ok _, Ok(Some t) -> Ok { MaxTest = 1; Replay = Some t }
    | Ok n, Ok None -> Ok { MaxTest = n; Replay = None }

let private fromEnvironment defaultMaxTest =
    settings defaultMaxTest (Option.ofObj (Environment.GetEnvironmentVariable MaxTestVariable))
        (Option.ofObj (Environment.GetEnvironmentVariable ReplayVariable))

/// FsCheck.Xunit's [<Properties>] for every [<Property>] of a module: MaxTest is `defaultMaxTest`,
/// or MMUSPEC_MAX_TEST when set, and MMUSPEC_REPLAY replays one case (`settings`). An attribute's
/// arguments are constants, so the count is given here and not as [<Property(MaxTest = ...)>] on
/// each property: a MaxTest there would win over this one and the environment could not change it.
/// A constructor that threw would abort the whole test run, so a bad variable leaves the default
/// count here and fails the Fact below instead.
[<AttributeUsage(AttributeTargets.Class ||| AttributeTargets.Assembly, AllowMultiple = false)>]
type PropertiesFromEnvironmentAttribute(defaultMaxTest: int) as this =
    inherit PropertiesAttribute()
    do
        match fromEnvironment defaultMaxTest with
        | Ok s ->
            this.MaxTest <- s.MaxTest
            s.Replay |> Option.iter (fun t -> this.Replay <- t)
        | Error _ -> this.MaxTest <- defaultMaxTest

[<Fact>]
let ``MMUSPEC_MAX_TEST and MMUSPEC_REPLAY, when set, can be read`` () =
    match fromEnvironment 1 with
    | Ok _ -> ()
    | Error message -> failwith message

[<Fact>]
let ``The settings take the environment's count and replay token, and name a variable they cannot read`` () =
    Assert.Equal(Ok { MaxTest = 300; Replay = None }, settings 300 None None)
    Assert.Equal(Ok { MaxTest = 300; Replay = None }, settings 300 (Some " ") (Some ""))
    Assert.Equal(Ok { MaxTest = 5000; Replay = None }, settings 300 (Some "5000") None)
    Assert.Equal(Ok { MaxTest = 1; Replay = Some "12,35,7" }, settings 300 (Some "5000") (Some "(12, 35, 7)"))
    for bad in [ "0"; "-3"; "ten"; "1e3"; "99999999999" ] do
        match settings 300 (Some bad) None with
        | Error e -> Assert.StartsWith($"{MaxTestVariable}='{bad}'", e)
        | ok -> failwithf "%s accepted: %A" bad ok
    for bad in [ "1,2,3"; "1,3"; "1,3,5,7"; "a,3,5"; "1,3,-5"; "1,,3"; "1,3,301"; "1,3,999999999" ] do
        match settings 300 None (Some bad) with
        | Error e -> Assert.StartsWith($"{ReplayVariable}='{bad}'", e)
        | ok -> failwithf "%s accepted: %A" bad ok
