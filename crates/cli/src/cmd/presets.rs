use anyhow::Result;
use ftbudget_report::group_digits;
use std::fmt::Write as _;

pub fn run() -> Result<()> {
    let mut text = String::new();
    for name in ftbudget_models::presets::names() {
        let model = ftbudget_models::load(name)?;
        writeln!(
            text,
            "{:<16} {:>20} params",
            name,
            group_digits(model.total_params())
        )?;
    }
    crate::output::emit(&text)
}
