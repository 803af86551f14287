/* Per-CPU bodies for the few hot loops that are worth them (not installed).
 *
 * SHOAL_CLONES before a function definition builds it twice on x86-64
 * Linux with GCC 12 or later: once for x86-64-v3 (AVX2, FMA) and once for
 * the build's baseline, and the dynamic loader picks one by the CPU it runs
 * on (an ifunc, resolved once). Elsewhere it is empty: arm64, armhf and
 * Android builds compile the same code for their own target.
 *
 * GCC only: clang 14 names its dispatcher "<name>.ifunc", which callers in
 * other files do not find unless they declare the clones too.
 *
 * -Dcpu_dispatch=false (SHOAL_NO_CLONES) builds the baseline body alone
 * (SHOAL_CLONES empty, SHOAL_X86_DISPATCH 0),
 * so that it is tested on a machine that would pick the AVX2 one.
 *
 * A cloned function passes its vector values between always-inline helpers
 * only: the warning that their ABI differs without AVX (-Wpsabi) does not
 * apply, and files using this header may silence it. */
#ifndef SHOAL_CLONES_H
#define SHOAL_CLONES_H

#if defined(__x86_64__) && defined(__linux__) && !defined(__ANDROID__) && !defined(__clang__) &&   \
    defined(__GNUC__) && __GNUC__ >= 12 && !defined(SHOAL_NO_CLONES)
#define SHOAL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SHOAL_CLONES
#endif

/* SHOAL_X86_DISPATCH: 1 where a file may build an AVX2 body of its own
 * with __attribute__((target("avx2,fma"))) and pick it at run time with
 * __builtin_cpu_supports (x86-64 Linux, GCC or clang), for loops whose best
 * code differs between the two levels more than target_clones can say. */
#if defined(__x86_64__) && defined(__linux__) && !defined(__ANDROID__) && defined(__GNUC__) &&     \
    !defined(SHOAL_NO_CLONES)
#define SHOAL_X86_DISPATCH 1
#else
#define SHOAL_X86_DISPATCH 0
#endif

#endif
