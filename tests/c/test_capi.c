/* C test of the bet runtime's C API (bet-runtime/include/bet.h, libbet_capi.a).
 *
 * Usage: test_capi FILE.bet
 * Prints, for every user (at most 8), the top-10 with items 1, 5, 16 excluded, then the top-10
 * for a caller vector, in the format of `bet rank` so CI can diff the two; then checks that bad
 * calls (null pointers, misaligned buffers, out-of-range users, unsorted lists, small buffers,
 * a corrupt copy of the file, a closed handle) return their error codes. An input-placement file
 * is propagated first (bet_propagate); scoring it before is refused. Exit 0 only if every check
 * passes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bet.h"

static int failures = 0;
#define EXPECT(cond)                                                        \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAILED line %d: %s\n", __LINE__, #cond);       \
            failures++;                                                     \
        }                                                                   \
    } while (0)

static uint32_t bits(float f) {
    uint32_t b;
    if (f != f) return 0x7fc00000u;
    memcpy(&b, &f, 4);
    return b;
}

static void print_top(const char *label, const BetScored *out, size_t n) {
    printf("%s:", label);
    for (size_t i = 0; i < n; i++) printf(" %u:%08x", out[i].index, bits(out[i].score));
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.bet\n", argv[0]);
        return 2;
    }
    FILE *fh = fopen(argv[1], "rb");
    if (!fh) { perror(argv[1]); return 2; }
    fseek(fh, 0, SEEK_END);
    long len = ftell(fh);
    fseek(fh, 0, SEEK_SET);
    /* 64-byte aligned copy, as in flash. */
    uint8_t *bytes = aligned_alloc(64, ((size_t)len + 63) / 64 * 64);
    if (fread(bytes, 1, (size_t)len, fh) != (size_t)len) { perror("read"); return 2; }
    fclose(fh);

    size_t size = bet_model_size(), align = bet_model_align();
    void *mem = aligned_alloc(align < 8 ? 8 : align, (size + 63) / 64 * 64);
    BetModel *model = NULL;
    EXPECT(bet_open(bytes, (size_t)len, mem, size, &model) == BET_OK);
    if (!model) return 1;
    EXPECT(bet_verify(model) == BET_OK);

    /* A LightGCN input-placement file scores only once propagated (into memory the library
       allocates and bet_close releases); for any other file bet_propagate does nothing. */
    BetScored probe[16];
    size_t probed = 0;
    int32_t first = bet_top_k(model, 0, 10, NULL, 0, probe, 16, &probed);
    EXPECT(first == BET_OK || first == BET_ERR_NOT_PROPAGATED);
#ifdef BET_TEST_WITHOUT_ALLOC
    /* The library built without an allocator (`--no-default-features`, as on a device): an
       input file cannot be propagated, says so, and stays unscorable; other files score. */
    if (first == BET_ERR_NOT_PROPAGATED) {
        EXPECT(bet_propagate(model) == BET_ERR_MEMORY);
        EXPECT(bet_top_k(model, 0, 10, NULL, 0, probe, 16, &probed) == BET_ERR_NOT_PROPAGATED);
        EXPECT(bet_close(model) == BET_OK);
        printf("input file refused: BET_ERR_MEMORY\n");
        fprintf(stderr, "C API without an allocator: %d failures\n", failures);
        free(mem);
        free(bytes);
        return failures == 0 ? 0 : 1;
    }
#endif
    EXPECT(bet_propagate(NULL) == BET_ERR_NULL);
    EXPECT(bet_propagate(model) == BET_OK);
    EXPECT(bet_propagate(model) == BET_OK); /* a second call changes nothing */
    fprintf(stderr, "C API: %s\n", first == BET_OK ? "scored in place" : "propagated at load");

    uint32_t n_users = 0, n_items = 0, width = 0;
    uint64_t params = 0;
    EXPECT(bet_counts(model, &n_users, &n_items, &width, &params) == BET_OK);
    uint32_t w0 = 0;
    EXPECT(bet_width(model, 1, 0, &w0) == BET_OK && w0 <= width);

    const uint32_t exclude[] = {1, 5, 16};
    BetScored out[16];
    size_t written = 0;
    char label[64];
    for (uint32_t u = 0; u < n_users && u < 8; u++) {
        EXPECT(bet_top_k(model, u, 10, exclude, 3, out, 16, &written) == BET_OK);
        snprintf(label, sizeof label, "user %u", u);
        print_top(label, out, written);
        float s = 0;
        EXPECT(written == 0 || (bet_score(model, u, out[0].index, &s) == BET_OK && bits(s) == bits(out[0].score)));
    }
    float vec[11];
    for (int t = 0; t < 11; t++) vec[t] = (float)(t - 5) / 8.0f; /* exact: -0.625 .. 0.625 */
    EXPECT(bet_top_k_vector(model, vec, 11, NULL, 0, 10, NULL, 0, out, 16, &written) == BET_OK);
    print_top("vector", out, written);

    /* Bad calls: each gets its code, none crashes. */
    EXPECT(bet_top_k(NULL, 0, 10, NULL, 0, out, 16, &written) == BET_ERR_NULL);
    EXPECT(bet_top_k(model, n_users, 10, NULL, 0, out, 16, &written) == BET_ERR_RANGE);
    EXPECT(bet_top_k(model, 0, 10, NULL, 0, out, 4, &written) == BET_ERR_BUFFER);
    EXPECT(bet_top_k(model, 0, 10, NULL, 0, out, 16, NULL) == BET_ERR_NULL);
    const uint32_t unsorted[] = {5, 1};
    EXPECT(bet_top_k(model, 0, 10, unsorted, 2, out, 16, &written) == BET_ERR_ARGUMENT);
    EXPECT(bet_top_k(model, 0, 10, (const uint32_t *)((const char *)exclude + 1), 2, out, 16, &written) == BET_ERR_ALIGNMENT);
    EXPECT(bet_score(model, 0, n_items, &vec[0]) == BET_ERR_RANGE);
    EXPECT(bet_width(model, 2, 0, &w0) == BET_ERR_ARGUMENT);
    float wide[2048] = {0};
    EXPECT(bet_top_k_vector(model, wide, width + 1, NULL, 0, 5, NULL, 0, out, 16, &written) == BET_ERR_ARGUMENT);
    uint64_t junk[512] = {0};
    EXPECT(bet_verify((const BetModel *)junk) == BET_ERR_HANDLE);
    BetModel *other = NULL;
    EXPECT(bet_open(bytes, (size_t)len, mem, size - 1, &other) == BET_ERR_HANDLE_SIZE);
    EXPECT(bet_open(bytes, 10, mem, size, &other) == BET_ERR_FORMAT);
    EXPECT(bet_open(NULL, (size_t)len, mem, size, &other) == BET_ERR_NULL);

    /* A corrupt copy: a flipped payload bit is caught by the checksum, a broken header at open. */
    uint8_t *bad = aligned_alloc(64, ((size_t)len + 63) / 64 * 64);
    void *mem2 = aligned_alloc(align < 8 ? 8 : align, (size + 63) / 64 * 64);
    memcpy(bad, bytes, (size_t)len);
    uint32_t count;
    memcpy(&count, bytes + 24, 4);
    for (uint32_t i = 0; i < count; i++) { /* find item_values (kind 5) in the section table */
        uint16_t kind;
        uint64_t offset;
        memcpy(&kind, bytes + 64 + 32 * i, 2);
        memcpy(&offset, bytes + 64 + 32 * i + 8, 8);
        if (kind == 5) bad[offset + 3] ^= 0x01;
    }
    EXPECT(bet_open(bad, (size_t)len, mem2, size, &other) == BET_OK);
    EXPECT(bet_verify(other) == BET_ERR_CHECKSUM);
    memcpy(bad, bytes, (size_t)len);
    bad[70] ^= 0x01;
    EXPECT(bet_open(bad, (size_t)len, mem2, size, &other) == BET_ERR_FORMAT);

    /* Closing releases the handle once: every later call is refused, a second close too. */
    EXPECT(bet_close(model) == BET_OK);
    EXPECT(bet_verify(model) == BET_ERR_HANDLE);
    EXPECT(bet_top_k(model, 0, 10, NULL, 0, out, 16, &written) == BET_ERR_HANDLE);
    EXPECT(bet_close(model) == BET_ERR_HANDLE);
    EXPECT(bet_close(NULL) == BET_ERR_NULL);

    fprintf(stderr, "C API: %u users, %u items, %llu parameters, %d failures\n", n_users, n_items,
            (unsigned long long)params, failures);
    free(bad);
    free(mem2);
    free(mem);
    free(bytes);
    return failures == 0 ? 0 : 1;
}
