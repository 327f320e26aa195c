// The time loops of models/fastpath.py in C++ (CPU): per step one addmm through ATen and one
// pass of plain C++ over the step's rows for the activation, forward and backward.
//
// Why by hand: at the paper's small shapes a step's elementwise work is 8-10 separate ATen
// calls from Python (a few microseconds of dispatch each, on a few thousand numbers), which
// costs as much as the step's GEMM. Here it is one loop the compiler vectorises (built with
// -fno-trapping-math -fno-math-errno, which allow that and change no result). The PyTorch
// version in fastpath.py stays the reference the tests compare this against.
#include <torch/extension.h>

#include <cmath>
#include <optional>

namespace {

enum Act : int64_t { MODRELU_COMPLEX = 0, MODRELU_REAL = 1, LEAKY_RELU = 2, TANH = 3, IDENTITY = 4 };

// One step of the complex modReLU: z (B, d) -> h (B, d), d = 2n, rows [Re | Im]. Written without
// branches so that the compiler vectorises it (random signs would mispredict).
template <typename T>
void modrelu_complex_forward(const T* __restrict z, T* __restrict h, const T* __restrict bias, int64_t B,
                             int64_t n, T eps, T eps_sqrt) {
  for (int64_t b = 0; b < B; ++b) {
    const T* zr = z + b * 2 * n;
    const T* zi = zr + n;
    T* hr = h + b * 2 * n;
    T* hi = hr + n;
    for (int64_t j = 0; j < n; ++j) {
      const T mag = std::sqrt(zr[j] * zr[j] + zi[j] * zi[j] + eps_sqrt);   // |z|_eps
      const T on = mag + bias[j];
      const T s = (on > T(0) ? on : T(0)) / (mag + eps);                 // ReLU(|z| + b) / (|z| + eps)
      hr[j] = zr[j] * s;
      hi[j] = zi[j] * s;
    }
  }
}

// One step of a real activation but tanh (ATen's vectorised tanh_), in place on x (B, d).
template <typename T>
void real_forward(T* __restrict x, const T* __restrict bias, int64_t B, int64_t d, int64_t act, T slope) {
  if (act == MODRELU_REAL) {
    for (int64_t b = 0; b < B; ++b) {
      T* xb = x + b * d;
      for (int64_t j = 0; j < d; ++j) {
        const T v = xb[j];
        const T r = (v < T(0) ? -v : v) + bias[j];
        const T m = r > T(0) ? r : T(0);
        xb[j] = v > T(0) ? m : (v < T(0) ? -m : T(0));                 // sign(z) ReLU(|z| + b)
      }
    }
  } else if (act == LEAKY_RELU) {
    for (int64_t i = 0; i < B * d; ++i) x[i] *= x[i] > T(0) ? T(1) : slope;     // x > 0 ? x : slope x
  }
}

// One step of the complex modReLU's backward, in place on g (B, d): dL/dh -> dL/dz, the step's
// bias gradient added to dbias, and the step's state h = z s (B, d) written to h. dL/dz = s g + c z <g, z> per complex unit with
// c = (eps - b) / ((|z| + eps)^2 |z|) where the ReLU passes, else s = c = 0; ds/db = 1 / (|z| + eps).
template <typename T>
void modrelu_complex_backward(T* __restrict g, const T* __restrict z, const T* __restrict bias,
                              T* __restrict dbias, T* __restrict h, int64_t B, int64_t n, T eps, T eps_sqrt) {
  for (int64_t b = 0; b < B; ++b) {
    const T* zr = z + b * 2 * n;
    const T* zi = zr + n;
    T* gr = g + b * 2 * n;
    T* gi = gr + n;
    T* hr = h + b * 2 * n;
    T* hi = hr + n;
    for (int64_t j = 0; j < n; ++j) {
      const T mag = std::sqrt(zr[j] * zr[j] + zi[j] * zi[j] + eps_sqrt);
      const T den = mag + eps;
      const T on = mag + bias[j];
      const bool pass = on > T(0);
      const T s = (pass ? on : T(0)) / den;
      const T dot = gr[j] * zr[j] + gi[j] * zi[j];
      const T cd = pass ? (eps - bias[j]) / (den * den * mag) * dot : T(0);
      gr[j] = gr[j] * s + zr[j] * cd;
      gi[j] = gi[j] * s + zi[j] * cd;
      dbias[j] += pass ? dot / den : T(0);
      hr[j] = zr[j] * s;
      hi[j] = zi[j] * s;
    }
  }
}

// One step of a real activation's backward, in place on g (B, d), from the states h.
template <typename T>
void real_backward(T* __restrict g, const T* __restrict h, T* __restrict dbias, int64_t B, int64_t d, int64_t act,
                   T slope) {
  if (act == MODRELU_REAL) {                                  // dh/dz = [h != 0], dh/db = sign(h)
    for (int64_t b = 0; b < B; ++b) {
      T* gb = g + b * d;
      const T* hb = h + b * d;
      for (int64_t j = 0; j < d; ++j) {
        const T v = hb[j] != T(0) ? gb[j] : T(0);
        gb[j] = v;
        dbias[j] += hb[j] > T(0) ? v : -v;
      }
    }
  } else if (act == LEAKY_RELU) {
    for (int64_t i = 0; i < B * d; ++i) g[i] *= h[i] > T(0) ? T(1) : slope;
  } else if (act == TANH) {
    for (int64_t i = 0; i < B * d; ++i) g[i] *= T(1) - h[i] * h[i];
  }
}

}  // namespace

// Z (L, B, d) holds xu and receives the pre-activations; H (L, B, d) the states. H is a separate
// buffer for the complex modReLU and Z itself for the real activations (computed in place).
void forward(torch::Tensor Z, torch::Tensor H, torch::Tensor h0, torch::Tensor W, const std::optional<torch::Tensor>& bias,
             int64_t act, double eps, double eps_sqrt, double slope) {
  const int64_t L = Z.size(0), B = Z.size(1), d = Z.size(2);
  TORCH_CHECK(Z.is_contiguous() && H.is_contiguous() && (act == MODRELU_COMPLEX) != H.is_same(Z),
              "fastpath_native.forward: Z and H must be contiguous; H is Z exactly for the real activations");
  torch::Tensor h = h0.expand({B, d});
  const torch::Tensor bc = bias ? bias->contiguous() : torch::Tensor();     // read by index below
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "fastpath_native_forward", [&] {
    const scalar_t* b = bc.defined() ? bc.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = 0; t < L; ++t) {
      torch::Tensor zt = Z.select(0, t), ht = H.select(0, t);
      zt.addmm_(h, W);
      if (act == MODRELU_COMPLEX)
        modrelu_complex_forward<scalar_t>(zt.data_ptr<scalar_t>(), ht.data_ptr<scalar_t>(), b, B, d / 2,
                                          scalar_t(eps), scalar_t(eps_sqrt));
      else if (act == TANH)
        zt.tanh_();
      else
        real_forward<scalar_t>(zt.data_ptr<scalar_t>(), b, B, d, act, scalar_t(slope));
      h = ht;
    }
  });
}

// G (L, B, d) holds dL/dh_t (the loss's part) and becomes dL/dz_t in place, steps L-1..0:
// g_h_t += g_z_{t+1} W^T, then the activation's backward from Z (complex modReLU) or from the
// states H (the real activations; H is Z there). Returns the bias gradient (undefined without a
// bias). For complex modReLU it also adds sum_t h_t^T g_z_{t+1} to dW when dW is given: the
// states are recomputed in blocks of `block` steps and each block is one GEMM, so that no
// state-sized buffer is kept.
torch::Tensor backward(torch::Tensor G, torch::Tensor Z, torch::Tensor H, torch::Tensor Wt,
                       const std::optional<torch::Tensor>& bias, int64_t act, double eps, double eps_sqrt,
                       double slope, const std::optional<torch::Tensor>& dW, int64_t block) {
  const int64_t L = G.size(0), B = G.size(1), d = G.size(2);
  TORCH_CHECK(G.is_contiguous() && Z.is_contiguous() && H.is_contiguous() && block > 0,
              "fastpath_native.backward: G, Z and H must be contiguous, block positive");
  torch::Tensor dbias = bias ? torch::zeros_like(*bias) : torch::Tensor();
  torch::Tensor states = act == MODRELU_COMPLEX ? torch::empty({std::min(block, L), B, d}, G.options())
                                                : torch::Tensor();
  const torch::Tensor bc = bias ? bias->contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "fastpath_native_backward", [&] {
    const scalar_t* b = bc.defined() ? bc.data_ptr<scalar_t>() : nullptr;
    scalar_t* db = dbias.defined() ? dbias.data_ptr<scalar_t>() : nullptr;
    for (int64_t t0 = block * ((L - 1) / block); t0 >= 0; t0 -= block) {
      const int64_t t1 = std::min(t0 + block, L);
      for (int64_t t = t1 - 1; t >= t0; --t) {
        torch::Tensor gt = G.select(0, t);
        if (t < L - 1) gt.addmm_(G.select(0, t + 1), Wt);
        if (act == MODRELU_COMPLEX)
          modrelu_complex_backward<scalar_t>(gt.data_ptr<scalar_t>(), Z.select(0, t).data_ptr<scalar_t>(), b, db,
                                             states.select(0, t - t0).data_ptr<scalar_t>(), B, d / 2,
                                             scalar_t(eps), scalar_t(eps_sqrt));
        else
          real_backward<scalar_t>(gt.data_ptr<scalar_t>(), H.select(0, t).data_ptr<scalar_t>(), db, B, d, act,
                                  scalar_t(slope));
      }
      const int64_t t2 = std::min(t1, L - 1);              // h_t pairs with g_z_{t+1}
      if (act == MODRELU_COMPLEX && dW && t2 > t0)
        dW->addmm_(states.narrow(0, 0, t2 - t0).reshape({-1, d}).t(), G.narrow(0, t0 + 1, t2 - t0).reshape({-1, d}));
    }
  });
  return dbias;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused recurrence forward (CPU)");
  m.def("backward", &backward, "fused recurrence backward time loop (CPU)");
}
