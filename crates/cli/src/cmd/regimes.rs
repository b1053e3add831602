use anyhow::Result;
use std::fmt::Write as _;

pub fn run() -> Result<()> {
    let registry = ftbudget_roster::registry()?;
    let mut text = String::new();
    for reg in registry.registrations() {
        writeln!(text, "{:<8} {}", reg.name, reg.summary)?;
        for opt in reg.options {
            writeln!(
                text,
                "    {}={:<34} {} (default: {})",
                opt.key,
                opt.values,
                opt.help,
                if opt.default.is_empty() {
                    "none"
                } else {
                    opt.default
                }
            )?;
        }
    }
    crate::output::emit(&text)
}
