"""scuRNN math: unitarity, Theorem 2 gradients, finite differences, parameter counts."""
import math

import pytest
import torch

from bench.models import build_model
from bench.models.scurnn import SCURNN
from bench.models.unitary import scaled_cayley, skew_hermitian


def _loss(model, x, target):
    return ((model(x) - target) ** 2).mean()


@pytest.fixture
def small64():
    torch.manual_seed(0)
    model = SCURNN(d_input=3, d_output=2, n_hidden=5).double()
    with torch.no_grad():  # move off the init's zero imaginary part so every entry matters
        model.A_im.normal_(0, 0.3)
        model.A_re.normal_(0, 0.3)
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    target = torch.randn(4, 7, 2, dtype=torch.float64)
    return model, x, target


def test_w_is_unitary_at_init_float32():
    torch.manual_seed(1)
    for n in (2, 7, 64, 130):
        model = SCURNN(d_input=10, d_output=9, n_hidden=n)
        W = model.recurrent_matrix()
        assert W.dtype == torch.complex64
        assert (W.mH @ W - torch.eye(n, dtype=W.dtype)).abs().max() < 1e-5


def test_theorem2_gradients_match_autograd(small64):
    """A.grad and theta.grad equal the paper's Theorem 2 (DFA, DFT) computed from dL/dW."""
    model, x, target = small64
    n = model.n_hidden
    A = model.skew_hermitian_A().detach()
    theta = model.theta.detach()
    d = torch.polar(torch.ones_like(theta), theta)
    K = scaled_cayley(A, torch.ones(n, dtype=A.dtype))
    W = (K * d.unsqueeze(0)).detach().requires_grad_(True)

    # dL/dW through a forward that uses W as a plain complex variable.
    from bench.models.unitary import complex_to_real_block, modrelu_complex, unroll
    xu = x @ model.U
    hs = unroll(xu, model.h0, complex_to_real_block(W), lambda z: modrelu_complex(z, model.bias))
    loss = ((model.readout(hs) - target) ** 2).mean()
    loss.backward()
    dL_dW = 0.5 * W.grad.conj()                       # Wirtinger derivative (paper §4)

    eye = torch.eye(n, dtype=A.dtype)
    C = torch.linalg.solve((eye + A).T, dL_dW @ (torch.diag(d) + W.detach().T))
    DFA = C.T - C.conj()
    DFT = 2 * torch.real(1j * torch.diagonal(dL_dW.T @ K) * d)

    model.zero_grad()
    _loss(model, x, target).backward()
    rows, cols = torch.triu_indices(n, n, 1)
    torch.testing.assert_close(model.A_re.grad, DFA.real[rows, cols], rtol=1e-8, atol=1e-10)
    rows, cols = torch.triu_indices(n, n, 0)
    torch.testing.assert_close(model.A_im.grad, DFA.imag[rows, cols], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(model.theta.grad, DFT, rtol=1e-8, atol=1e-10)
    # DFA is skew-Hermitian, so A stays skew-Hermitian under the update
    torch.testing.assert_close(DFA, -DFA.mH)


def test_gradients_match_finite_differences(small64):
    """Without the reference scaling, gradients are the true free-parameter gradients."""
    model, x, target = small64
    model.reference_gradient = False
    model.zero_grad()
    _loss(model, x, target).backward()
    h = 1e-6
    for p in (model.A_re, model.A_im, model.theta, model.U, model.bias, model.h0):
        flat, grad = p.data.view(-1), p.grad.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 6)):
            old = flat[i].item()
            flat[i] = old + h
            up = _loss(model, x, target).item()
            flat[i] = old - h
            down = _loss(model, x, target).item()
            flat[i] = old
            assert grad[i].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8)


def test_reference_gradient_is_half_off_diagonal(small64):
    model, x, target = small64
    _loss(model, x, target).backward()
    ref_re, ref_im = model.A_re.grad.clone(), model.A_im.grad.clone()
    model.zero_grad()
    model.reference_gradient = False
    _loss(model, x, target).backward()
    torch.testing.assert_close(ref_re, 0.5 * model.A_re.grad)
    rows, cols = torch.triu_indices(5, 5, 0)
    scale = torch.where(rows == cols, 1.0, 0.5).double()
    torch.testing.assert_close(ref_im, scale * model.A_im.grad)


@pytest.mark.parametrize("n,m,p", [(4, 1, 10), (17, 2, 1), (116, 1, 10), (128, 129, 129), (130, 10, 9)])
def test_parameter_count_formula(n, m, p):
    model = build_model("scurnn", d_input=m, d_output=p, n_hidden=n)
    assert model.count_params() == SCURNN.n_params(n, m, p)
    stored = sum(q.numel() for q in model.parameters())
    assert stored == SCURNN.n_params(n, m, p)


def test_paper_budgets():
    # scuRNN n=116 MNIST 16,482 (with h0) ~16k; n=128 TIMIT 83,073 ~83k (paper Tables 1-2)
    assert SCURNN.n_params(116, 1, 10) == 16_482
    assert SCURNN.n_params(250, 1, 10) == 69_010
    assert SCURNN.n_params(128, 129, 129) == 83_073
    assert SCURNN.n_params(130, 10, 9) == 22_369
    assert SCURNN.hidden_for_budget(16_482, 1, 10) == 116


def test_cayley_init_rotation_angles():
    torch.manual_seed(3)
    model = SCURNN(d_input=1, d_output=1, n_hidden=8).double()
    with torch.no_grad():
        model.theta.zero_()
    W = model.recurrent_matrix()
    angles = torch.angle(torch.linalg.eigvals(W)).abs()
    assert (angles < math.pi / 2 + 1e-9).all()
    assert model.A_im.abs().max() == 0


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("n", [1, 2, 7, 33])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_expm_skew_backward_equals_matrix_exps(n, complex_, dtype):
    """unitary.expm_skew's eigendecomposition backward against torch.linalg.matrix_exp's own (the
    2n block-matrix exponential), on random and on block-degenerate (equal eigenvalues) A."""
    from bench.models.unitary import cayley_block_init, expm_skew, skew_symmetric

    torch.manual_seed(n)
    free = torch.randn(n * (n - 1) // 2, dtype=torch.float64)
    cases = [free, cayley_block_init(n)] if n > 1 else [free]
    for upper in cases:
        A = (skew_hermitian(upper, torch.randn(n * (n + 1) // 2, dtype=torch.float64), n) if complex_
             else skew_symmetric(upper, n))
        A = A.to(torch.complex64 if complex_ and dtype == torch.float32 else (dtype if not complex_ else torch.complex128))
        A.requires_grad_(True)
        G = torch.randn(A.shape, dtype=A.dtype)
        (want,) = torch.autograd.grad(torch.linalg.matrix_exp(A), A, G)
        (got,) = torch.autograd.grad(expm_skew(A), A, G)
        torch.testing.assert_close(expm_skew(A), torch.linalg.matrix_exp(A), rtol=0, atol=0)   # the same forward
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
