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
