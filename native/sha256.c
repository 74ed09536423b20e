// SHA-256 with the x86 SHA extensions (SHA-NI), linked into the executable: hashing without loading libcrypto.
// Loading libcrypto.so.3 costs a process ~130 page faults (its relocations and the pages they touch), ~4 ms on this
// project's VMs where a page fault is a hypervisor trap, paid by every command that hashes anything. OpenSSL uses
// the same instructions on these CPUs. Where the CPU lacks them, dk_sha256_available() is 0 and the caller uses
// libcrypto as before (src/DiffKeeper.Storage/Codecs/Sha256.cs).
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

// Fits in the 112 bytes the C# side reserves for a context (LibCrypto.Sha256Context).
typedef struct {
    uint32_t state[8];
    uint64_t length; // bytes appended so far
    uint8_t block[64];
    uint32_t used; // bytes of block filled
} dk_sha256_ctx;

_Static_assert(sizeof(dk_sha256_ctx) <= 112, "the C# context is 112 bytes");

#if defined(__x86_64__)
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

// The compression function over n whole 64-byte blocks, four rounds per step; the message schedule is kept as four
// vectors of four words (x[i & 3] is words 4i..4i+3).
__attribute__((target("sha,sse4.1,ssse3")))
static void blocks(uint32_t state[8], const uint8_t *data, size_t n)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i s1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);        // CDAB
    s1 = _mm_shuffle_epi32(s1, 0x1B);          // EFGH
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);  // ABEF
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);       // CDGH

    for (; n > 0; n--, data += 64) {
        const __m128i abef = s0, cdgh = s1;
        __m128i x[4];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            __m128i w;
            if (i < 4) {
                w = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * i)), bswap);
            } else {
                // W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time
                w = _mm_sha256msg1_epu32(x[i & 3], x[(i + 1) & 3]);
                w = _mm_add_epi32(w, _mm_alignr_epi8(x[(i + 3) & 3], x[(i + 2) & 3], 4));
                w = _mm_sha256msg2_epu32(w, x[(i + 3) & 3]);
            }
            x[i & 3] = w;
            __m128i m = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&K[4 * i]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            m = _mm_shuffle_epi32(m, 0x0E);
            s0 = _mm_sha256rnds2_epu32(s0, s1, m);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }

    tmp = _mm_shuffle_epi32(s0, 0x1B);         // FEBA
    s1 = _mm_shuffle_epi32(s1, 0xB1);          // DCHG
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);       // DCBA
    s1 = _mm_alignr_epi8(s1, tmp, 8);          // HGFE
    _mm_storeu_si128((__m128i *)&state[0], s0);
    _mm_storeu_si128((__m128i *)&state[4], s1);
}

// Sixteen independent messages at once, one in each 32-bit lane of the AVX-512 registers: state[w] holds word w of
// every lane's state, and each step hashes the next 64-byte block of all sixteen data[l]. It does not use the SHA
// instructions (they hash one message at a time, ~1.7 GB/s here) but plain vector rotates, adds and three-input logic,
// 2.2x their speed on this project's VMs over 208 blocks of 64 KiB (docs/benchmarks.md, "mat15"). The digests are
// SHA-256's: the caller finishes each lane with dk_sha256_final.
#define X16 __attribute__((target("avx512f,avx512bw")))

// Sixteen rows of sixteen words (one 64-byte block of each lane) turned into sixteen columns (word t of every lane).
X16 static inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
        r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
    }
}

X16 static void blocks16(__m512i state[8], const uint8_t *const data[16], size_t n)
{
    const __m512i bswap = _mm512_broadcast_i32x4(_mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3));
    __m512i a = state[0], b = state[1], c = state[2], d = state[3], e = state[4], f = state[5], g = state[6], h = state[7];
    for (size_t block = 0; block < n; block++) {
        __m512i w[16];
        for (int l = 0; l < 16; l++) {
            w[l] = _mm512_loadu_si512((const void *)(data[l] + 64 * block));
        }
        transpose16(w);
        for (int i = 0; i < 16; i++) {
            w[i] = _mm512_shuffle_epi8(w[i], bswap);
        }
#pragma GCC unroll 64
        for (int t = 0; t < 64; t++) {
            __m512i wt;
            if (t < 16) {
                wt = w[t];
            } else {
                // W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16]; 0x96 is a ^ b ^ c
                const __m512i w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
                const __m512i s0 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(w15, 7), _mm512_ror_epi32(w15, 18), _mm512_srli_epi32(w15, 3), 0x96);
                const __m512i s1 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(w2, 17), _mm512_ror_epi32(w2, 19), _mm512_srli_epi32(w2, 10), 0x96);
                wt = _mm512_add_epi32(_mm512_add_epi32(w[t & 15], s0), _mm512_add_epi32(w[(t - 7) & 15], s1));
                w[t & 15] = wt;
            }
            // 0xCA is Ch(e, f, g) = (e & f) ^ (~e & g); 0xE8 is Maj(a, b, c)
            const __m512i S1 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(e, 6), _mm512_ror_epi32(e, 11), _mm512_ror_epi32(e, 25), 0x96);
            const __m512i ch = _mm512_ternarylogic_epi32(e, f, g, 0xCA);
            const __m512i t1 = _mm512_add_epi32(_mm512_add_epi32(h, S1), _mm512_add_epi32(ch, _mm512_add_epi32(wt, _mm512_set1_epi32((int)K[t]))));
            const __m512i S0 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(a, 2), _mm512_ror_epi32(a, 13), _mm512_ror_epi32(a, 22), 0x96);
            const __m512i maj = _mm512_ternarylogic_epi32(a, b, c, 0xE8);
            h = g;
            g = f;
            f = e;
            e = _mm512_add_epi32(d, t1);
            d = c;
            c = b;
            b = a;
            a = _mm512_add_epi32(t1, _mm512_add_epi32(S0, maj));
        }
        a = state[0] = _mm512_add_epi32(state[0], a);
        b = state[1] = _mm512_add_epi32(state[1], b);
        c = state[2] = _mm512_add_epi32(state[2], c);
        d = state[3] = _mm512_add_epi32(state[3], d);
        e = state[4] = _mm512_add_epi32(state[4], e);
        f = state[5] = _mm512_add_epi32(state[5], f);
        g = state[6] = _mm512_add_epi32(state[6], g);
        h = state[7] = _mm512_add_epi32(state[7], h);
    }
}

// AVX-512 F and BW, and an OS that saves the ZMM registers (XCR0: SSE, AVX, opmask, ZMM0-15 and ZMM16-31 state).
static int avx512_usable(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || __get_cpuid_max(0, NULL) < 7) {
        return 0;
    }
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & bit_AVX512F) || !(b & bit_AVX512BW)) {
        return 0;
    }
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xE6) == 0xE6;
}

// Adds n whole blocks of lane[l] to c[l] for sixteen contexts at a block boundary (pointers may repeat: a lane given
// twice is hashed twice and stored once, the same result).
X16 static void update16(dk_sha256_ctx *const c[16], const uint8_t *const lane[16], size_t n)
{
    uint32_t words[8][16] __attribute__((aligned(64)));
    for (int l = 0; l < 16; l++) {
        for (int w = 0; w < 8; w++) {
            words[w][l] = c[l]->state[w];
        }
    }
    __m512i state[8];
    for (int w = 0; w < 8; w++) {
        state[w] = _mm512_load_si512((const void *)words[w]);
    }
    blocks16(state, lane, n);
    for (int w = 0; w < 8; w++) {
        _mm512_store_si512((void *)words[w], state[w]);
    }
    for (int l = 0; l < 16; l++) {
        for (int w = 0; w < 8; w++) {
            c[l]->state[w] = words[w][l];
        }
    }
}

int dk_sha256_available(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1)) {
        return 0;
    }
    if (__get_cpuid_max(0, NULL) < 7) {
        return 0;
    }
    __cpuid_count(7, 0, a, b, c, d);
    return (b & bit_SHA) != 0;
}
#else
static void blocks(uint32_t state[8], const uint8_t *data, size_t n) { (void)state; (void)data; (void)n; }
int dk_sha256_available(void) { return 0; }
static int avx512_usable(void) { return 0; }
#endif

void dk_sha256_init(dk_sha256_ctx *c)
{
    static const uint32_t iv[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(c->state, iv, sizeof iv);
    c->length = 0;
    c->used = 0;
}

void dk_sha256_update(dk_sha256_ctx *c, const uint8_t *data, size_t len)
{
    c->length += len;
    if (len == 0) {
        return;
    }
    if (c->used > 0) {
        size_t take = 64 - c->used < len ? 64 - c->used : len;
        memcpy(c->block + c->used, data, take);
        c->used += (uint32_t)take;
        data += take;
        len -= take;
        if (c->used < 64) {
            return;
        }
        blocks(c->state, c->block, 1);
        c->used = 0;
    }
    if (len >= 64) {
        blocks(c->state, data, len / 64);
        data += len & ~(size_t)63;
        len &= 63;
    }
    if (len > 0) {
        memcpy(c->block, data, len); // data may be NULL when len is 0 (an empty span)
    }
    c->used = (uint32_t)len;
}

void dk_sha256_final(dk_sha256_ctx *c, uint8_t digest[32])
{
    const uint64_t bits = c->length * 8;
    c->block[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->block + c->used, 0, 64 - c->used);
        blocks(c->state, c->block, 1);
        c->used = 0;
    }
    memset(c->block + c->used, 0, 56 - c->used);
    for (int i = 0; i < 8; i++) {
        c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    blocks(c->state, c->block, 1);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(c->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(c->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(c->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)c->state[i];
    }
}

// Fewer lanes than this with whole blocks to hash: one message at a time with the SHA instructions is faster.
#define MinLanes 8

// 1 when dk_sha256_update_many hashes sixteen messages at once on this CPU (AVX-512), else 0 (it still works, one by one).
int dk_sha256_many_available(void)
{
    return avx512_usable();
}

// Appends len[i] bytes at data[i] to ctx[i], for each of the n contexts: the same result as n dk_sha256_update calls.
// Where the CPU has AVX-512, the whole blocks that at least MinLanes of up to sixteen contexts at a block boundary all
// have are hashed in the lanes of the vector registers at once, and the rest one by one. Only for a process where
// dk_sha256_available() is 1 (the rest goes through the SHA instructions).
void dk_sha256_update_many(dk_sha256_ctx *const *ctx, const uint8_t *const *data, const size_t *len, size_t n)
{
    static int wide = -1; // computed once; a race only computes it twice
    if (wide < 0) {
        wide = avx512_usable();
    }

    for (size_t first = 0; first < n; first += 16) {
        const size_t count = n - first < 16 ? n - first : 16;
        size_t skip[16] = {0};
#if defined(__x86_64__)
        size_t member[16], m = 0, common = SIZE_MAX;
        for (size_t i = 0; wide && i < count; i++) {
            if (ctx[first + i]->used == 0 && len[first + i] >= 64) {
                member[m++] = i;
                common = len[first + i] / 64 < common ? len[first + i] / 64 : common;
            }
        }
        if (m >= MinLanes) {
            dk_sha256_ctx *lanes[16];
            dk_sha256_ctx spare[16];
            const uint8_t *in[16];
            for (size_t l = 0; l < 16; l++) {
                // lanes beyond the members repeat the first member's data into a context of their own, thrown away
                lanes[l] = l < m ? ctx[first + member[l]] : &spare[l];
                in[l] = data[first + member[l < m ? l : 0]];
                if (l >= m) {
                    spare[l] = *ctx[first + member[0]];
                }
            }
            update16(lanes, in, common);
            for (size_t l = 0; l < m; l++) {
                lanes[l]->length += 64 * common;
                skip[member[l]] = 64 * common;
            }
        }
#endif
        for (size_t i = 0; i < count; i++) {
            dk_sha256_update(ctx[first + i], len[first + i] > skip[i] ? data[first + i] + skip[i] : NULL, len[first + i] - skip[i]);
        }
    }
}
