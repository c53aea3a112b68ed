// What radix_populate.c's shuffled pass leaves out: a fault reads the leaf entry before it writes one (the
// entry may be present: then it is a hit). Same 4-level radix, same shuffle (srand(1)); the tables are built
// once and kept, and each pass clears the leaves, then refills them in shuffled order two ways:
//   blind store:      entry = leaf                          (radix_populate.c's map4k, minus table allocation)
//   read then store:  if (!present(entry)) entry = leaf     (what a fault must do)
// Times are process CPU time, so a loaded machine inflates them less than a wall clock; quote the third pass.
// Build: cc -O2 -o /tmp/radix_fault bench/MmuSpec.Bench/radix_fault.c; run: /tmp/radix_fault 4194304
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_seconds(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static uint64_t *new_table(void) { void *p; if (posix_memalign(&p, 4096, 4096)) abort(); memset(p, 0, 4096); return p; }

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
    printf("n=%llu shuffled, tables kept: blind store %.2f ns/map, read then store %.2f ns/map (CPU time; %llu faults)\n",
           (unsigned long long)n, (t1 - t0) * 1e9 / n, (t3 - t2) * 1e9 / n, (unsigned long long)faults);
  }
  return 0;
}
