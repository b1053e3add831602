//! Assertions shared by the measured-record tests.

use ftbudget_core::MemoryEstimate;
use ftbudget_measurements::MemoryRecord;

/// Weights, gradients, optimizer moments and step counters match the record exactly.
pub fn assert_state_buckets_exact(r: &MemoryRecord, e: &MemoryEstimate) {
    assert_eq!(e.weights, r.params.total_bytes, "{} weights", r.id);
    assert_eq!(e.gradients, r.grads.bytes, "{} gradients", r.id);
    assert_eq!(
        e.detail.optimizer_states, r.optimizer.state_bytes_excl_step,
        "{} optimizer states",
        r.id
    );
    assert_eq!(
        e.detail.step_counters, r.optimizer.step_bytes,
        "{} steps",
        r.id
    );
}
