use anyhow::Result;

pub fn run() -> Result<()> {
    let registry = ftbudget_roster::registry()?;
    for reg in registry.registrations() {
        println!("{:<8} {}", reg.name, reg.summary);
        for opt in reg.options {
            println!(
                "    {}={:<34} {} (default: {})",
                opt.key,
                opt.values,
                opt.help,
                if opt.default.is_empty() {
                    "none"
                } else {
                    opt.default
                }
            );
        }
    }
    Ok(())
}
