//! Numbers the Poincaré-ball reference is generic over: `f64`, and [`Dual`], an f64 with one
//! forward-mode derivative, so the same code gives values and exact directional derivatives
//! (the gradients of composite maps without writing each map's Jacobian by hand).

use std::ops::{Add, Div, Mul, Neg, Sub};

/// A real number type: arithmetic, the few functions the ball maps use, and comparisons by
/// value (clamps and branches follow the value, as in the f64 code).
pub trait Real:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// A constant.
    fn of(v: f64) -> Self;
    /// The value (without derivative).
    fn value(self) -> f64;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn ln(self) -> Self;
    /// `max(self, m)` as `f64::max` (a NaN gives `m`).
    fn at_least(self, m: f64) -> Self {
        if self.value() > m {
            self
        } else {
            Self::of(m)
        }
    }
    /// `min(self, m)` as `f64::min` (a NaN gives `m`).
    fn at_most(self, m: f64) -> Self {
        if self.value() < m {
            self
        } else {
            Self::of(m)
        }
    }
}

impl Real for f64 {
    fn of(v: f64) -> f64 {
        v
    }
    fn value(self) -> f64 {
        self
    }
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }
    fn ln(self) -> f64 {
        f64::ln(self)
    }
}

/// A value `v` with its derivative `d` along one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual {
    pub v: f64,
    pub d: f64,
}

impl Dual {
    /// The variable itself (derivative 1) or a constant (0).
    pub fn new(v: f64, d: f64) -> Dual {
        Dual { v, d }
    }
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual::new(self.v + o.v, self.d + o.d)
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual::new(self.v - o.v, self.d - o.d)
    }
}
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual::new(self.v * o.v, self.d * o.v + self.v * o.d)
    }
}
impl Div for Dual {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        Dual::new(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))
    }
}
impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual::new(-self.v, -self.d)
    }
}

impl Real for Dual {
    fn of(v: f64) -> Dual {
        Dual::new(v, 0.0)
    }
    fn value(self) -> f64 {
        self.v
    }
    fn sqrt(self) -> Dual {
        let s = self.v.sqrt();
        Dual::new(s, self.d / (2.0 * s))
    }
    fn tanh(self) -> Dual {
        let t = self.v.tanh();
        Dual::new(t, (1.0 - t * t) * self.d)
    }
    fn ln(self) -> Dual {
        Dual::new(self.v.ln(), self.d / self.v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// d/dx of tanh(sqrt(x) / ln(x)) * x at 2.3 against a central difference.
    #[test]
    fn dual_derivative_matches_a_difference() {
        fn f<T: Real>(x: T) -> T {
            (x.sqrt() / x.ln()).tanh() * x - T::of(0.5)
        }
        let exact = f(Dual::new(2.3, 1.0)).d;
        let h = 1e-6;
        let numeric = (f(2.3 + h) - f(2.3 - h)) / (2.0 * h);
        assert!((exact - numeric).abs() < 1e-8, "{exact} vs {numeric}");
    }
}
