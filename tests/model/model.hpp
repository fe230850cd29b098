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
#include <initializer_list>

#include <relacy/relacy.hpp>

#ifndef MUTANT
#define MUTANT 0
#endif

// The memory order the C code uses, or `weak` in the mutant build.
#define MO(c_order, weak) (MUTANT ? (weak) : (c_order))

struct model_options {
  rl::scheduler_type_e search = rl::fair_context_bound_scheduler_type;
  unsigned context_bound = 2;
  rl::iteration_t random_runs = 0;
};

// Reads `--bound K` (context bound K) or `--random N` (N random
// schedules) over the model's defaults; false on anything else.
inline bool model_options_parse(model_options &o, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
      o.search = rl::random_scheduler_type;
      o.random_runs = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--bound") == 0 && i + 1 < argc) {
      o.search = rl::fair_context_bound_scheduler_type;
      o.context_bound = (unsigned)std::strtoul(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [--bound K | --random N]\n", argv[0]);
      return false;
    }
  }
  return true;
}

// Set once a scenario of a mutant build has failed: the rest are skipped.
inline bool model_mutant_caught = false;

// Runs one scenario and prints how many interleavings relacy explored and
// its verdict.
template <class Suite>
rl::test_result_e model_run(const char *model, const char *scenario,
                            const model_options &o) {
  if (MUTANT && model_mutant_caught) {
    std::printf("model.%s.mutant %s: skipped, already caught\n", model,
                scenario);
    return rl::test_result_success;
  }
  rl::test_params p;
  p.search_type = o.search;
  p.context_bound = o.context_bound;
  p.iteration_count = o.random_runs;
  p.execution_depth_limit = 20000;
  // The mutant's failure history is long; keep only the verdict. (A file
  // stream: relacy replaces operator new while it runs, so a string stream
  // that grew then would free memory with the wrong allocator.)
  std::ofstream quiet("/dev/null");
  if (MUTANT)
    p.output_stream = &quiet;
  p.progress_stream = &quiet;
  rl::simulate<Suite>(p);
  char search[64];
  if (o.search == rl::random_scheduler_type)
    std::snprintf(search, sizeof search, "random schedules");
  else
    std::snprintf(search, sizeof search, "context bound %u", p.context_bound);
  std::printf("model.%s%s %s: %s: %llu iterations, %s\n", model,
              MUTANT ? ".mutant" : "", scenario, search,
              (unsigned long long)p.stop_iteration,
              rl::test_result_str(p.test_result));
  std::fflush(stdout);
  if (p.test_result != rl::test_result_success)
    model_mutant_caught = true;
  return p.test_result;
}

// The exit status for a model's scenarios. Normal build: 0 when relacy
// found nothing in any. Mutant build: 0 only when it found something,
// printing "caught the mutant: <what>".
inline int model_verdict(std::initializer_list<rl::test_result_e> results) {
  for (rl::test_result_e r : results) {
    if (r == rl::test_result_success)
      continue;
    if (!MUTANT)
      return 1;
    std::printf("caught the mutant: %s\n", rl::test_result_str(r));
    return 0;
  }
  if (MUTANT) {
    std::printf("mutant NOT caught: the model misses the weakened order\n");
    return 1;
  }
  return 0;
}

#endif
