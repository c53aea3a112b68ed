// What radix_populate.c's shuffled pass leaves out: a fault reads the leaf entry before it writes one (the
// entry may be present: then it is a hit). Same 4-level radix, same shuffle (srand(1)); the tables are built
// once and kept, and each pass clears the leaves, then refills them in shuffled order two ways:
//   blind store:      entry = leaf                          (radix_populate.c's map4k, minus table allocation)
//   read then store:  if (!present(entry)) entry = leaf     (what a fault must do)
// and then reads every leaf once more in the same order (a hit: the leaf is present, nothing is stored).
// Times are process CPU time, so a loaded machine inflates them less than a wall clock; quote the third pass.
// A second argument `huge` cuts the tables from one 2 MiB-aligned arena advised MADV_HUGEPAGE, as the impl's
// table pages past its 16th slab are (impl/Memory/HugePageChunks.cs): the same memory backing for both sides.
// Build: cc -O2 -o /tmp/radix_fault bench/MmuSpec.Bench/radix_fault.c; run: /tmp/radix_fault 4194304 [huge]
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

static double cpu_seconds(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static char *arena, *arena_end; // the huge-page arena, when asked for

static uint64_t *new_table(void) {
  void *p;
  if (arena) { if (arena == arena_end) abort(); p = arena; arena += 4096; }
  else if (posix_memalign(&p, 4096, 4096)) abort();
  memset(p, 0, 4096);
  return p;
}

// Room for every table of n leaves (n/512 leaf tables, n/2^18 + 2 above them), 2 MiB-aligned and advised.
static void use_huge_arena(uint64_t n) {
  size_t bytes = ((n / 512 + n / 262144 + 8) * 4096 + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
  char *m = mmap(0, bytes + (2u << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) abort();
  arena = (char *)(((uintptr_t)m + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1));
  arena_end = arena + bytes;
  if (madvise(arena, bytes, MADV_HUGEPAGE)) perror("madvise");
}

// The level-1 table for gfn, creating missing tables on the way.
static uint64_t *leaf_table(uint64_t *root, uint64_t gfn) {
  uint64_t *t = root;
  for (int level = 4; level > 1; level--) {
    unsigned idx = (gfn >> (9 * (level - 1))) & 511;
    uint64_t e = t[idx];
    if (!(e & 1)) { uint64_t *c = new_table(); e = (uint64_t)(uintptr_t)c | 7; t[idx] = e; }
    t = (uint64_t *)(uintptr_t)(e & ~0xFFFull);
  }
  return t;
}

static void clear_leaves(uint64_t *root, uint64_t n) {
  for (uint64_t i = 0; i < n; i += 512) memset(leaf_table(root, 0x100000 + i), 0, 4096);
}

int main(int argc, char **argv) {
  uint64_t n = argc > 1 ? strtoull(argv[1], 0, 0) : 262144;
  int huge = argc > 2 && !strcmp(argv[2], "huge");
  if (huge) use_huge_arena(n);
  uint64_t *order = malloc(n * sizeof *order);
  for (uint64_t i = 0; i < n; i++) order[i] = i;
  srand(1);
  for (uint64_t i = n - 1; i > 0; i--) { uint64_t j = ((uint64_t)rand() << 16 ^ rand()) % (i + 1); uint64_t x = order[i]; order[i] = order[j]; order[j] = x; }
  uint64_t *root = new_table();
  for (uint64_t i = 0; i < n; i++) leaf_table(root, 0x100000 + order[i]); // every table, once
  for (int rep = 0; rep < 3; rep++) {
    clear_leaves(root, n);
    double t0 = cpu_seconds();
    for (uint64_t i = 0; i < n; i++) {
      uint64_t gfn = 0x100000 + order[i];
      leaf_table(root, gfn)[gfn & 511] = ((0x200000 + order[i]) << 12) | 7;
    }
    double t1 = cpu_seconds();
    clear_leaves(root, n);
    uint64_t faults = 0;
    double t2 = cpu_seconds();
    for (uint64_t i = 0; i < n; i++) {
      uint64_t gfn = 0x100000 + order[i];
      uint64_t *entry = &leaf_table(root, gfn)[gfn & 511];
      if (!(*entry & 7)) { *entry = ((0x200000 + order[i]) << 12) | 7; faults++; }
    }
    double t3 = cpu_seconds();
    uint64_t hits = 0; // every leaf is present now: a hit reads it and finds the frame
    for (uint64_t i = 0; i < n; i++) {
      uint64_t gfn = 0x100000 + order[i];
      hits += (leaf_table(root, gfn)[gfn & 511] >> 12) == 0x200000 + order[i];
    }
    double t4 = cpu_seconds();
    printf("n=%llu%s shuffled, tables kept: blind store %.2f ns/map, read then store %.2f ns/map, read only (a hit) %.2f ns"
           " (CPU time; %llu faults, %llu hits)\n",
           (unsigned long long)n, huge ? " huge" : "", (t1 - t0) * 1e9 / n, (t3 - t2) * 1e9 / n, (t4 - t3) * 1e9 / n,
           (unsigned long long)faults, (unsigned long long)hits);
  }
  return 0;
}
