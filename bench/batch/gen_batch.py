#!/usr/bin/env python3
"""Writes a batch file for `mmuspec walk --batch` (docs/performance.md, "Batch walks"):
one scenario per line over default memslots, in every paging mode, with tables at scattered
addresses (so walk order is not address order), A/D bits to set, faults, large pages, and a few
PAE PDPTEs with reserved bits (bad lines). Deterministic: usage gen_batch.py LINES SEED > FILE."""
import json, random, sys

def entry(r, table_bits, present=True):
    e = table_bits | (1 if present else 0)
    e |= 2 if r.random() < 0.8 else 0          # W
    e |= 4 if r.random() < 0.6 else 0          # U
    e |= 0x20 if r.random() < 0.3 else 0       # A already set
    return e

def scenario(r):
    mode = r.choice(["bits32", "pae", "long4", "long4", "long5"])
    wide = mode != "bits32"
    levels = {"bits32": 2, "pae": 2, "long4": 4, "long5": 5}[mode]
    pages = r.sample(range(0x10, 0x100), levels + 1)   # scattered 4 KiB frames below 1 MiB
    memory, gva, shift = {}, 0, 12
    index_bits = 9 if wide else 10
    shifts = [12 + index_bits * i for i in range(levels)][::-1]  # top level first
    s = {"mode": mode, "nxe": wide and r.random() < 0.7, "wp": r.random() < 0.5,
         "smep": r.random() < 0.2, "smap": r.random() < 0.2, "pse": r.random() < 0.5}
    if mode == "pae":
        cr3 = (pages[0] << 12) + 32 * r.randrange(4)
        slot = r.randrange(4)
        for i in range(4):
            memory[cr3 + 8 * i] = 0
        pdpte = (pages[1] << 12) | 1
        if r.random() < 0.03:
            pdpte |= r.choice([2, 4, 0x20, 0x100])   # reserved in a PDPTE: MOV CR3 would #GP
        memory[cr3 + 8 * slot] = pdpte
        gva = slot << 30
        tables = pages[1:]
    else:
        cr3 = pages[0] << 12
        tables = pages
    for level, table in enumerate(tables[:levels]):
        idx = r.randrange(1 << index_bits)
        gva |= idx << shifts[level]
        leaf_level = level == levels - 1
        large = not leaf_level and level == levels - 2 and r.random() < 0.15 and (wide or s["pse"])
        target = tables[level + 1] if not leaf_level and not large else r.randrange(0x100, 0x4000)
        if large:
            target &= ~(0x1FF if wide else 0x3FF)
        e = entry(r, target << 12, present=r.random() < 0.97)
        if large:
            e |= 0x80
        if (leaf_level or large) and r.random() < 0.3:
            e |= 0x40                                # D already set
        if wide and s["nxe"] and r.random() < 0.1:
            e |= 1 << 63
        if r.random() < 0.02:
            e |= 1 << 51 if wide else 0x200000        # reserved bit (or a PSE-36 bit)
        memory[(table << 12) + idx * (8 if wide else 4)] = e
        if large:
            break
    gva |= r.randrange(4096)
    if mode in ("long4", "long5") and r.random() < 0.5:
        top = 47 if mode == "long4" else 56
        if gva >> top & 1: gva |= (1 << 64) - (1 << top)
    s["cr3"] = hex(cr3)
    s["memory"] = {hex(g): hex(v) for g, v in memory.items()}
    s["access"] = {"gva": hex(gva), "type": r.choice(["read", "read", "write", "fetch"]),
                   "privilege": r.choice(["supervisor", "user"])}
    return s

lines, seed = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
out = sys.stdout
for _ in range(lines):
    out.write(json.dumps(scenario(r), separators=(",", ":")) + "\n")
