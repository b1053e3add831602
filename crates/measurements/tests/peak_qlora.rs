//! ftbudget's QLoRA step timeline against the peaks PyTorch's `MemTracker` measured over two
//! Trainer-like steps on a bitsandbytes 4-bit base (`fixtures/memory/measured_peak_qlora.json`,
//! `tools/measure-peak/measure_qlora.py`).

mod common;

use common::{Bound, Worst, bound, categories, measured_categories, relative_error};
use ftbudget_core::memory::StepPeak;
use ftbudget_measurements::peak::{parse_peak_records, predict_peak};

const PEAKS: &str = include_str!("../../../fixtures/memory/measured_peak_qlora.json");

const PEAK: &[Bound] = &[];

#[test]
fn predicted_qlora_peaks_match_memtracker() {
    let records = parse_peak_records(PEAKS).unwrap();
    let mut worst = Worst::default();
    let mut lines = Vec::new();
    for r in &records {
        let e = predict_peak(r).unwrap();
        lines.push(format!("{} weights predicted {} measured {}", r.id, e.weights, r.params.total_bytes));
        for ((name, measured), predicted) in [("step 1", &r.peak.step1), ("step 2", &r.peak.step2)]
            .into_iter()
            .zip([e.peak.first, e.peak.steady])
        {
            let StepPeak { bytes, phase, by_category } = predicted;
            let error = relative_error(bytes, measured.peak_bytes);
            lines.push(format!("{} {name}: {:+.2}% predicted {phase} measured {}", r.id, 100.0 * error, measured.phase));
            let m = measured_categories(&measured.by_category);
            for ((cat, p), (_, mb)) in categories(&by_category).into_iter().zip(categories(&m)) {
                if p != mb {
                    lines.push(format!("    {cat}: predicted {p}, measured {mb} ({:+})", p as i64 - mb as i64));
                }
            }
            worst.add(r.id.clone(), error, name);
        }
    }
    println!("{}", lines.join("\n"));
    worst.check("peak", PEAK);
}
