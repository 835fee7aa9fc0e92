/* ft_cpu.h: CPU features for the code paths chosen at run time (SHA-NI for SHA-1 and SHA-256, AES-NI).
 * User space only; x86-64 with GCC or clang, elsewhere FT_X86_FEATURES is 0 and only the C paths exist. */
#ifndef FT_CPU_H
#define FT_CPU_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FT_X86_FEATURES 1
#include <cpuid.h>
#include <immintrin.h>

/* CPU features from CPUID itself: __builtin_cpu_supports("sha") is unknown to clang before 15 (Debian 12
 * ships clang 14), which then refused to compile. Leaf 1 ECX: bit 19 SSE4.1, bit 25 AES-NI; leaf 7
 * subleaf 0 EBX: bit 29 SHA. Returns 1 when the bit is set. */
static inline int ft_cpuid_bit(unsigned leaf, unsigned reg, unsigned bit)
{
    unsigned r[4] = {0, 0, 0, 0};
    if (!__get_cpuid_count(leaf, 0, &r[0], &r[1], &r[2], &r[3]))
        return 0;
    return (r[reg] >> bit) & 1u;
}
/* a build may answer "no" itself (fuzz/build.py does, to fuzz the portable paths) */
#ifndef FT_CPU_SSE41
#define FT_CPU_SSE41() ft_cpuid_bit(1, 2, 19)
#endif
#ifndef FT_CPU_AES
#define FT_CPU_AES() ft_cpuid_bit(1, 2, 25)
#endif
#ifndef FT_CPU_SHA
#define FT_CPU_SHA() ft_cpuid_bit(7, 1, 29)
#endif
#else
#define FT_X86_FEATURES 0
#endif

#endif /* FT_CPU_H */
