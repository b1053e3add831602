use anyhow::Result;
use ftbudget_report::group_digits;

pub fn run() -> Result<()> {
    for name in ftbudget_models::presets::names() {
        let model = ftbudget_models::load(name)?;
        println!(
            "{:<16} {:>20} params",
            name,
            group_digits(model.total_params())
        );
    }
    Ok(())
}
