/* grow: allocate memory 1 MiB at a time (writing every page) until malloc fails, then print
 * "grew N MiB" and exit 0. Under the sandbox's memory limit wasm's memory.grow returns -1 and
 * malloc returns NULL. An optional argument caps the number of MiB (e.g. `grow 8`).
 *
 * The blocks are kept in a global list and read back, so the compiler cannot elide the
 * malloc/memset pairs (it may when a block is never used, and then assumes malloc never fails). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1 << 20)
#define MAX_BLOCKS 65536 /* 64 GiB: more than wasm32 can address */

static char *blocks[MAX_BLOCKS];

int main(int argc, char **argv) {
    long max = argc > 1 ? atol(argv[1]) : MAX_BLOCKS;
    if (max > MAX_BLOCKS) max = MAX_BLOCKS;
    long got = 0;
    while (got < max) {
        char *p = malloc(MIB);
        if (p == NULL) break;
        memset(p, (int)(got & 0x7f) + 1, MIB);
        blocks[got++] = p;
    }
    unsigned long check = 0;
    for (long i = 0; i < got; i++)
        for (long off = 0; off < MIB; off += 4096) check += (unsigned char)blocks[i][off];
    printf("grew %ld MiB\n", got);
    fprintf(stderr, "check %lu\n", check);
    return 0;
}
