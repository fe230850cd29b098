// Shared by the relacy models (docs/TESTING.md "Model checking").
//
// Each model transcribes one lock-free part of core/src into C++ over
// relacy's rl::atomic (same operations, same memory orders) and rl::var
// (plain fields, so relacy reports a data race on them), runs a bounded
// scenario under every interleaving relacy's scheduler explores and checks
// invariants in after(). Built with -DMUTANT=1 one memory order (named
// beside the model) is weakened, and the binary passes only if relacy then
// finds a failure.
#ifndef TREADLE_MODEL_HPP
#define TREADLE_MODEL_HPP

// Standard headers first: relacy.hpp defines new and delete as macros.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <relacy/relacy.hpp>

#ifndef MUTANT
#define MUTANT 0
#endif

// The memory order the C code uses, or `weak` in the mutant build.
#define MO(c_order, weak) (MUTANT ? (weak) : (c_order))

// Runs Suite under the scheduler and bound given (argv may override:
// `--random N` runs N random interleavings instead). Normal build: exit 0
// when relacy finds nothing. Mutant build: exit 0 only when it finds
// something, printing "caught the mutant: <what>".
template <class Suite>
int model_main(const char *name, int argc, char **argv,
               rl::scheduler_type_e search, unsigned context_bound) {
  rl::test_params p;
  p.search_type = search;
  p.context_bound = context_bound;
  p.iteration_count = 0;
  p.execution_depth_limit = 20000;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
      p.search_type = rl::random_scheduler_type;
      p.iteration_count = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--bound") == 0 && i + 1 < argc) {
      p.search_type = rl::fair_context_bound_scheduler_type;
      p.context_bound = (unsigned)std::strtoul(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [--random N | --bound K]\n", argv[0]);
      return 2;
    }
  }
  // The mutant's failure history is long; keep only the verdict. (A file
  // stream: relacy replaces operator new while it runs, so a string stream
  // that grows then would free memory with the wrong allocator.)
  std::ofstream quiet("/dev/null");
  if (MUTANT)
    p.output_stream = p.progress_stream = &quiet;
  else
    p.progress_stream = &quiet;
  bool ok = rl::simulate<Suite>(p);
  std::printf("model.%s%s: %s, context bound %u: %llu iterations, %s\n", name,
              MUTANT ? ".mutant" : "", rl::format(p.search_type),
              p.context_bound, (unsigned long long)p.stop_iteration,
              rl::test_result_str(p.test_result));
  if (!MUTANT)
    return ok ? 0 : 1;
  if (ok) {
    std::printf("mutant NOT caught: the model misses the weakened order\n");
    return 1;
  }
  std::printf("caught the mutant: %s\n", rl::test_result_str(p.test_result));
  return 0;
}

#endif
