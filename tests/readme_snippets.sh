#!/bin/sh
# The README's quick start compiles (make doc-check): its first three C
# snippets, in order, become the body of one main() - the first's
# #define and #include lifted out, the variables they leave to the reader
# (x, f, dx, v: a batch of 64 images) declared - and the program is built
# with the Makefile's warnings as errors. A renamed function or a changed
# signature in ebm.h then fails here rather than in a reader's build.
# Compiled at -O0 (the library's code is checked by the suites), not run.
set -eu
B=${B:-build}
CC=${CC:-cc}
out=$B/readme_snippets.c
{
  printf '#define EBM_IMPLEMENTATION\n#include "ebm.h"\n#include <stdio.h>\n#include <stdlib.h>\n'
  printf 'int main(void)\n{\n    static float x[64 * 784], f[64], dx[64 * 784], v[64 * 784];\n'
  awk '/^## Quick start/ { on = 1; next } /^## / { on = 0 }
       on && /^```c$/ { n++; code = n <= 3; next }
       on && /^```$/ { code = 0; next }
       code && !/^#define EBM_IMPLEMENTATION/ && !/^#include "ebm.h"/ { print "    " $0 }' README.md
  printf '    return 0;\n}\n'
} > "$out"
test "$(grep -c ebm_ "$out")" -gt 20 # (the snippets were found)
$CC -std=c99 -pedantic -Wall -Wextra -Werror -O0 -ffp-contract=off -I. "$out" -o $B/readme_snippets -lm
echo "ok   doc-check (the README's quick start compiles against ebm.h)"
