/* main.c -- placeholder until the core lands. */
#include "common.h"
#include <stdio.h>
int main(void)
{
    printf("lunagate %s\n", LG_VERSION);
    return 0;
}
