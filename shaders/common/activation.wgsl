// Activation epilogues, chosen by the ACT pipeline constant:
// 0 none, 1 SiLU x*sigmoid(x), 2 GELU (tanh approximation), 3 GELU (erf), 4 ReLU,
// 5 SELU lambda * (x > 0 ? x : alpha * (exp(x) - 1)).
// SELU's alpha and lambda are read from the kernel's uniform block (`params.selu_alpha`,
// `params.selu_lambda`): every kernel composed with this snippet has those fields, and custom
// values do not make new pipelines.
override ACT: u32 = 0u;

// erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26): WGSL has no erf.
fn erf_approx(v: V) -> V {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-a * a);
    return select(-r, r, v >= V(0.0));
}

// The derivative of `activate` at v, for the backward passes (ReLU's at 0 is 0, as PyTorch's).
fn activate_grad(v: V) -> V {
    switch ACT {
        case 1u: {
            let s = 1.0 / (1.0 + exp(-v));
            return s * (1.0 + v * (1.0 - s));
        }
        case 2u: {
            // 0.5 (1 + tanh u) = sigmoid(2u) and 1 - tanh^2 u = 4 s (1 - s): the sigmoid form
            // keeps the tail where tanh rounds to -1 (derivatives of 1e-6 at x = -5).
            let k = 0.7978845608028654;
            let s = 1.0 / (1.0 + exp(-2.0 * k * (v + 0.044715 * v * v * v)));
            return s + 2.0 * v * s * (1.0 - s) * k * (1.0 + 0.134145 * v * v);
        }
        case 3u: {
            let cdf = 0.5 * (1.0 + erf_approx(v * 0.7071067811865476));
            return cdf + v * 0.3989422804014327 * exp(-0.5 * v * v);
        }
        case 4u: {
            return select(V(0.0), V(1.0), v > V(0.0));
        }
        case 5u: {
            return params.selu_lambda * select(params.selu_alpha * exp(min(v, V(0.0))), V(1.0), v > V(0.0));
        }
        default: {
            return V(1.0);
        }
    }
}

fn activate(v: V) -> V {
    switch ACT {
        case 1u: {
            return v / (1.0 + exp(-v));
        }
        case 2u: {
            // tanh overflows to NaN in some backends for large |u|: clamp its argument.
            let u = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), V(-15.0), V(15.0));
            return 0.5 * v * (1.0 + tanh(u));
        }
        case 3u: {
            return 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
        }
        case 4u: {
            return max(v, V(0.0));
        }
        case 5u: {
            return params.selu_lambda * select(params.selu_alpha * (exp(min(v, V(0.0))) - 1.0), v, v > V(0.0));
        }
        default: {
            return v;
        }
    }
}
