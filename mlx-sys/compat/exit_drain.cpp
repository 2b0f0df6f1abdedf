// Linked whole into every binary that links MLX on Linux (see build.rs): when the process
// exits, waits for the work still queued on MLX's CPU streams before anything is torn down.
//
// Why: MLX's scheduler is allocated once and never destroyed, so its stream threads keep
// running while the process exits. A step queued with `async_eval` and not waited for
// (generation that stops at an end-of-sequence token leaves one) then runs on while exit
// handlers destroy MLX's statics, and can still be inside `cblas_sgemm` when the loader runs
// OpenBLAS's destructor (`gotoblas_quit` -> `blas_thread_shutdown_`). That shutdown stores its
// exit request in each worker's queue slot while a worker is still busy with the stream
// thread's job; the worker, finishing, clears the slot (queue 0), misses the request, goes
// back to sleep (status SLEEP), and the shutdown waits in `pthread_join` forever (Debian 12's
// OpenBLAS 0.3.21). MLX's own guard (its allocator synchronizes the CPU streams) cannot help
// at exit: the stream registry it reads is a static that is destroyed first.
//
// So the drain is an `atexit` handler, registered twice: once before `main` (after touching
// the stream registry, so that the registry outlives the handler), for every program; and
// again by `mlx_sys::set_exit_drain(true)` once MLX is in use (mlx-models calls it when it
// loads a model), so that it runs before the statics MLX created since (its allocator among
// them) are destroyed. It only uses the stream registry and the scheduler, and waits on each
// CPU stream in turn; a program that never used MLX has no stream and waits for nothing.
#include <atomic>
#include <cstdlib>

#include "mlx/stream.h"

namespace {
std::atomic<bool> drain_on{true};
std::atomic<bool> late_registered{false};

int drain() {
  try {
    int waited = 0;
    for (const auto& stream : mlx::core::get_streams()) {
      if (stream.device == mlx::core::Device::cpu) {
        mlx::core::synchronize(stream);
        waited++;
      }
    }
    return waited;
  } catch (...) {
    return -1;
  }
}

void drain_at_exit() {
  if (drain_on.load()) {
    drain();
  }
}

__attribute__((constructor)) void register_drain() {
  try {
    mlx::core::get_streams();
  } catch (...) {
  }
  std::atexit(drain_at_exit);
}
} // namespace

extern "C" {
// Waits for every CPU stream now; returns how many it waited for, or -1 when MLX threw.
int mlx_sys_exit_drain(void) {
  return drain();
}

// Turns the drain at exit on or off; turning it on also registers it to run before the
// statics MLX has created so far are destroyed.
void mlx_sys_set_exit_drain(int on) {
  drain_on.store(on != 0);
  if (on != 0 && !late_registered.exchange(true)) {
    std::atexit(drain_at_exit);
  }
}
}
