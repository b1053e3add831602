//! Sweeps over ranks and widths, and the "what fits" solver: the largest batch, sequence length
//! and rank whose estimate fits a memory budget, found by bisection on monotone functions.
