//! [`Exact`]: `u64` byte arithmetic that remembers overflow instead of wrapping or saturating,
//! so the activation formulas read as plain arithmetic, cost one machine multiply per `*` (the
//! hot path of sweeps), and still end in an error rather than a wrong number when a size is
//! absurd.

use std::cmp::Ordering;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul};

/// A `u64` or "overflowed". Every operation on an overflowed value stays overflowed; an
/// overflowed value compares greater than every number, so choosing the larger of two figures
/// never drops an overflow.
#[derive(Debug, Clone, Copy)]
pub struct Exact {
    value: u64,
    /// Some step overflowed (`value` is then meaningless). Kept as a flag rather than an
    /// `Option` so that every operation is branch-free.
    overflowed: bool,
}

impl Exact {
    pub const ZERO: Exact = Exact::new(0);
    const OVERFLOWED: Exact = Exact {
        value: 0,
        overflowed: true,
    };

    pub const fn new(value: u64) -> Self {
        Exact {
            value,
            overflowed: false,
        }
    }

    /// The value, or `None` when some step overflowed.
    pub const fn get(self) -> Option<u64> {
        if self.overflowed {
            None
        } else {
            Some(self.value)
        }
    }

    /// `self - other`, or 0 when `other` is larger.
    #[inline]
    pub fn saturating_sub(self, other: Exact) -> Exact {
        Exact {
            value: self.value.saturating_sub(other.value),
            overflowed: self.overflowed | other.overflowed,
        }
    }
}

impl PartialEq for Exact {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Exact {}

impl Default for Exact {
    fn default() -> Self {
        Exact::ZERO
    }
}

impl From<u64> for Exact {
    fn from(value: u64) -> Self {
        Exact::new(value)
    }
}

impl Ord for Exact {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.get(), other.get()) {
            (Some(a), Some(b)) => a.cmp(&b),
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
        }
    }
}

impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

macro_rules! checked_op {
    ($trait:ident, $method:ident, $overflowing:ident) => {
        impl $trait for Exact {
            type Output = Exact;
            #[inline]
            fn $method(self, rhs: Exact) -> Exact {
                let (value, overflowed) = self.value.$overflowing(rhs.value);
                Exact {
                    value,
                    overflowed: overflowed | self.overflowed | rhs.overflowed,
                }
            }
        }
        impl $trait<u64> for Exact {
            type Output = Exact;
            #[inline]
            fn $method(self, rhs: u64) -> Exact {
                self.$method(Exact::new(rhs))
            }
        }
        impl $trait<Exact> for u64 {
            type Output = Exact;
            #[inline]
            fn $method(self, rhs: Exact) -> Exact {
                Exact::new(self).$method(rhs)
            }
        }
    };
}

checked_op!(Add, add, overflowing_add);
checked_op!(Mul, mul, overflowing_mul);

impl Div<u64> for Exact {
    type Output = Exact;
    /// Division by zero counts as an overflow.
    #[inline]
    fn div(self, rhs: u64) -> Exact {
        match self.value.checked_div(rhs) {
            Some(value) => Exact {
                value,
                overflowed: self.overflowed,
            },
            None => Exact::OVERFLOWED,
        }
    }
}

impl Div for Exact {
    type Output = Exact;
    #[inline]
    fn div(self, rhs: Exact) -> Exact {
        let quotient = self / rhs.value;
        Exact {
            overflowed: quotient.overflowed | rhs.overflowed,
            ..quotient
        }
    }
}

impl AddAssign for Exact {
    #[inline]
    fn add_assign(&mut self, rhs: Exact) {
        *self = *self + rhs;
    }
}

impl Sum for Exact {
    fn sum<I: Iterator<Item = Exact>>(iter: I) -> Exact {
        iter.fold(Exact::ZERO, Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_sticks_and_wins_comparisons() {
        let big = Exact::new(u64::MAX / 2);
        let over = big * 3;
        assert_eq!(over.get(), None);
        assert_eq!((over.saturating_sub(big) + 1).get(), None);
        assert!(over > Exact::new(u64::MAX));
        assert_eq!(
            Exact::new(6) * Exact::new(7) + 2 * Exact::new(4),
            Exact::new(50)
        );
        assert_eq!((Exact::new(9) / 0).get(), None);
        assert_eq!(Exact::new(3).saturating_sub(Exact::new(5)), Exact::ZERO);
    }
}
