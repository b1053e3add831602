//! [`Exact`]: `u64` byte arithmetic that remembers overflow instead of wrapping, so the
//! activation formulas read as plain arithmetic, cost about one machine instruction more than
//! unchecked arithmetic per operation (the hot path of `estimate` and sweeps), and still end in an
//! error rather than a wrong number when a size is absurd.
//!
//! Overflow is kept in the value itself: `u64::MAX` stands for "too large". Additions and
//! multiplications saturate to it, which keeps it (an overflowed figure can only grow), except
//! that a product with zero is zero, which is the exact answer whatever the other factor.
//! Subtraction and division, the operations that could bring it back into range, keep it
//! explicitly. A figure of exactly `u64::MAX` bytes reads as an overflow: an error, never a
//! wrong number.

use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul};

/// A `u64` or "overflowed". Every operation on an overflowed value stays overflowed (a product
/// with zero excepted: it is exactly zero); an overflowed value compares greater than every
/// number, so choosing the larger of two figures never drops an overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Exact(u64);

impl Exact {
    pub const ZERO: Exact = Exact(0);
    const OVERFLOWED: Exact = Exact(u64::MAX);

    pub const fn new(value: u64) -> Self {
        Exact(value)
    }

    /// The value, or `None` when some step overflowed.
    #[inline]
    pub const fn get(self) -> Option<u64> {
        if self.0 == u64::MAX {
            None
        } else {
            Some(self.0)
        }
    }

    /// `self - other`, or 0 when `other` is larger; overflowed when either is.
    #[inline]
    pub fn saturating_sub(self, other: Exact) -> Exact {
        if self == Exact::OVERFLOWED || other == Exact::OVERFLOWED {
            Exact::OVERFLOWED
        } else {
            Exact(self.0.saturating_sub(other.0))
        }
    }
}

impl From<u64> for Exact {
    fn from(value: u64) -> Self {
        Exact::new(value)
    }
}

macro_rules! saturating_op {
    ($trait:ident, $method:ident, $saturating:ident) => {
        impl $trait for Exact {
            type Output = Exact;
            #[inline]
            fn $method(self, rhs: Exact) -> Exact {
                Exact(self.0.$saturating(rhs.0))
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

saturating_op!(Add, add, saturating_add);
saturating_op!(Mul, mul, saturating_mul);

impl Div<u64> for Exact {
    type Output = Exact;
    /// Division by zero counts as an overflow.
    #[inline]
    fn div(self, rhs: u64) -> Exact {
        match self.0.checked_div(rhs) {
            Some(value) if self != Exact::OVERFLOWED => Exact(value),
            _ => Exact::OVERFLOWED,
        }
    }
}

impl Div for Exact {
    type Output = Exact;
    #[inline]
    fn div(self, rhs: Exact) -> Exact {
        if rhs == Exact::OVERFLOWED {
            Exact::OVERFLOWED
        } else {
            self / rhs.0
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
        assert_eq!(big.saturating_sub(over).get(), None);
        assert_eq!((over / 2).get(), None);
        assert_eq!((big / over).get(), None);
        assert_eq!((over * 2 * big).get(), None);
        assert!(over > Exact::new(u64::MAX - 1));
        assert_eq!(over.max(big), over);
        assert_eq!(
            Exact::new(6) * Exact::new(7) + 2 * Exact::new(4),
            Exact::new(50)
        );
        assert_eq!((Exact::new(9) / 0).get(), None);
        assert_eq!(Exact::new(3).saturating_sub(Exact::new(5)), Exact::ZERO);
        // Exactly zero, whatever the other factor.
        assert_eq!(over * Exact::ZERO, Exact::ZERO);
        assert_eq!(Exact::new(u64::MAX - 1).get(), Some(u64::MAX - 1));
    }
}
