/* Shared main() for kt unit tests: link this file into every test binary. */
#define KT_IMPLEMENTATION
#include "kt.h"

int main(void)
{
    return kt_run();
}
