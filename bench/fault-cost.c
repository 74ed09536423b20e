// What a page fault costs on this machine, against mapping the same pages in one call: the start of any process
// here is mostly page faults (bench/fault-cost.sh). Prints microseconds per 4 KiB page, median of 9 rounds.
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum { Pages = 1000, Rounds = 9 };

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double per_page(int populate)
{
    double times[Rounds];
    for (int r = 0; r < Rounds; r++) {
        volatile char *p = mmap(NULL, Pages * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            exit(1);
        }
        double start = now_us();
        if (populate) {
            if (madvise((void *)p, Pages * 4096L, MADV_POPULATE_WRITE) != 0) {
                perror("madvise(MADV_POPULATE_WRITE)");
                exit(1);
            }
        } else {
            for (long i = 0; i < Pages; i++) {
                p[i * 4096] = 1;
            }
        }
        times[r] = (now_us() - start) / Pages;
        munmap((void *)p, Pages * 4096L);
    }
    qsort(times, Rounds, sizeof times[0], compare);
    return times[Rounds / 2];
}

int main(void)
{
    printf("first write to a fresh anonymous page (one fault each): %.2f us/page\n", per_page(0));
    printf("the same pages mapped by one madvise(MADV_POPULATE_WRITE): %.2f us/page\n", per_page(1));
    return 0;
}
