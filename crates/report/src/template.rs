//! Report templates: Markdown prose with `{{name}}` placeholders that code fills.
//!
//! A placeholder is `{{` + a name of lowercase ASCII letters, digits and `_` (spaces around it
//! allowed) + `}}`. Every placeholder must have a value and every value must be used: an unknown
//! placeholder is a typo in the template and an unused value is a figure the prose forgot, so both
//! are errors. A literal `{{` is written `{{{{`.

use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("line {line}: unknown placeholder `{{{{{name}}}}}`")]
    Unknown { line: usize, name: String },
    #[error("line {line}: malformed placeholder (expected `{{{{name}}}}` with a-z, 0-9, _)")]
    Malformed { line: usize },
    #[error("value `{name}` is never used by the template")]
    Unused { name: String },
}

/// Named values for [`render`], in a stable order.
#[derive(Debug, Clone, Default)]
pub struct Values {
    map: BTreeMap<String, String>,
}

impl Values {
    pub fn new() -> Self {
        Values::default()
    }

    /// Set `name`; setting a name twice keeps the last value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.map.insert(name.to_string(), value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// A view that sets every name under `prefix` (`fitted_` and `records` set
    /// `fitted_records`), so one function can fill the same figures for several parts of a
    /// report.
    pub fn prefixed<'a>(&'a mut self, prefix: &'a str) -> Prefixed<'a> {
        Prefixed {
            values: self,
            prefix,
        }
    }
}

/// [`Values`] seen through a name prefix ([`Values::prefixed`]).
pub struct Prefixed<'a> {
    values: &'a mut Values,
    prefix: &'a str,
}

impl Prefixed<'_> {
    /// Set `prefix` + `name`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.values.set(&format!("{}{name}", self.prefix), value);
        self
    }
}

/// A Markdown bullet list: one `- item` line per item.
pub fn bullet_list(items: impl IntoIterator<Item = String>) -> String {
    items
        .into_iter()
        .map(|item| format!("- {item}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Fill every placeholder of `template` from `values`.
pub fn render(template: &str, values: &Values) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut used = std::collections::BTreeSet::new();
    let mut rest = template;
    let line_of = |rest: &str| {
        template[..template.len() - rest.len()]
            .matches('\n')
            .count()
            + 1
    };
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        if let Some(literal) = after.strip_prefix("{{") {
            out.push_str("{{");
            rest = literal;
            continue;
        }
        let Some(end) = after.find("}}") else {
            return Err(TemplateError::Malformed {
                line: line_of(&rest[at..]),
            });
        };
        let name = after[..end].trim();
        if !valid_name(name) {
            return Err(TemplateError::Malformed {
                line: line_of(&rest[at..]),
            });
        }
        match values.get(name) {
            Some(v) => {
                out.push_str(v);
                used.insert(name.to_string());
            }
            None => {
                return Err(TemplateError::Unknown {
                    line: line_of(&rest[at..]),
                    name: name.to_string(),
                });
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(name) = values.names().find(|n| !used.contains(*n)) {
        return Err(TemplateError::Unused {
            name: name.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut v = Values::new();
        v.set("ratio", "25.00%").set("rank", "8");
        v
    }

    #[test]
    fn fills_placeholders_and_literals() {
        let out = render("r={{rank}}, ratio {{ ratio }}; literal {{{{x}}", &values()).unwrap();
        assert_eq!(out, "r=8, ratio 25.00%; literal {{x}}");
    }

    #[test]
    fn unknown_placeholder_names_line_and_name() {
        let err = render("{{rank}} {{ratio}}\n\n{{rnak}}", &values()).unwrap_err();
        assert_eq!(err.to_string(), "line 3: unknown placeholder `{{rnak}}`");
    }

    #[test]
    fn prefixed_values_and_bullet_lists() {
        let mut v = Values::new();
        v.prefixed("held_out_")
            .set("records", "216")
            .set("worst", "-23.62%");
        assert_eq!(
            v.names().collect::<Vec<_>>(),
            ["held_out_records", "held_out_worst"]
        );
        assert_eq!(v.get("held_out_records"), Some("216"));
        assert_eq!(bullet_list(["a".to_string(), "b".to_string()]), "- a\n- b");
        assert_eq!(bullet_list(Vec::new()), "");
    }

    #[test]
    fn malformed_and_unused_are_errors() {
        assert_eq!(
            render("a\n{{Rank}}", &values()).unwrap_err(),
            TemplateError::Malformed { line: 2 }
        );
        assert_eq!(
            render("{{rank", &values()).unwrap_err(),
            TemplateError::Malformed { line: 1 }
        );
        assert_eq!(
            render("{{rank}}", &values()).unwrap_err().to_string(),
            "value `ratio` is never used by the template"
        );
    }
}
