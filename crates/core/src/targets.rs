//! Which Linear modules an adapter attaches to, with peft's meaning of `target_modules`.

use crate::error::{ShapeError, TargetSpecError};
use crate::shape::{LinearModule, ModelShape, ModuleGroup};
use std::fmt;
use std::str::FromStr;

/// A target selection as written in a regime spec (`targets=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// peft's `all-linear`: every Linear (and GPT-2 Conv1D) except the output layer, and the
    /// MoE parameters peft converts ([`LinearModule::in_all_linear`]).
    AllLinear,
    /// Every Linear of the attention blocks.
    Attention,
    /// Every Linear of the MLP blocks (experts included, routers not).
    Mlp,
    /// Module names as peft matches them: a module is selected when its path equals the name or
    /// ends with `.name` (so `c_proj` selects GPT-2's attention and MLP `c_proj`).
    Names(Vec<String>),
}

impl FromStr for TargetSpec {
    type Err = TargetSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all-linear" | "all" => Ok(TargetSpec::AllLinear),
            "attn" | "attention" => Ok(TargetSpec::Attention),
            "mlp" => Ok(TargetSpec::Mlp),
            "" => Err(TargetSpecError::Empty),
            list => {
                let names: Vec<String> = list.split('+').map(|n| n.trim().to_string()).collect();
                if names.iter().any(String::is_empty) {
                    return Err(TargetSpecError::EmptyName {
                        list: list.to_string(),
                    });
                }
                Ok(TargetSpec::Names(names))
            }
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::AllLinear => f.write_str("all-linear"),
            TargetSpec::Attention => f.write_str("attn"),
            TargetSpec::Mlp => f.write_str("mlp"),
            TargetSpec::Names(names) if names.is_empty() => f.write_str("none"),
            TargetSpec::Names(names) => f.write_str(&names.join("+")),
        }
    }
}

fn path_matches(path: &str, name: &str) -> bool {
    path == name
        || (path.len() > name.len()
            && path.ends_with(name)
            && path.as_bytes()[path.len() - name.len() - 1] == b'.')
}

/// The path peft would see for `alias` of `module` (the module's parent path plus the alias).
fn alias_matches(module: &LinearModule, alias: &str, name: &str) -> bool {
    if alias == module.name {
        return path_matches(&module.path, name);
    }
    let parent = module.path.rsplit_once('.').map_or("", |(p, _)| p);
    // Expert weights sit under `...experts`; the aliases lived at `...experts.*.alias`.
    let path = if parent.is_empty() {
        alias.to_string()
    } else {
        format!("{parent}.*.{alias}")
    };
    path_matches(&path, name)
}

fn fused_in_part(m: &LinearModule) -> ShapeError {
    ShapeError::Inconsistent {
        field: "targets",
        reason: format!(
            "{} are fused into `{}`; target all of them or none",
            m.target_names.join(" and "),
            m.name
        ),
    }
}

impl TargetSpec {
    /// Does this selection take `module`? Allocation-free, for the hot path of sweeps; a model's
    /// selection must have passed [`ModelShape::check_targets`] first (which rejects unknown
    /// names, fused modules named in part, and empty selections).
    #[inline]
    pub fn selects(&self, module: &LinearModule) -> bool {
        match self {
            TargetSpec::AllLinear => module.in_all_linear,
            TargetSpec::Attention => {
                module.group == ModuleGroup::Attention && !module.target_names.is_empty()
            }
            TargetSpec::Mlp => module.group == ModuleGroup::Mlp && !module.target_names.is_empty(),
            TargetSpec::Names(names) => names_select(names, module),
        }
    }
}

/// Does any of `names` select `module` (through any of its target names)?
pub fn names_select(names: &[String], module: &LinearModule) -> bool {
    module
        .target_names
        .iter()
        .any(|alias| names.iter().any(|n| alias_matches(module, alias, n)))
}

/// The modules a target selection takes on one model, resolved once: what a regime's hot loop
/// asks per module. Groups (`all-linear`, `attn`, `mlp`) are answered per module; names are
/// matched once into a bitmask (up to 128 module kinds and names; past that, per module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSelection<'a> {
    /// Answered per module by [`TargetSpec::selects`].
    Spec(&'a TargetSpec),
    /// Bit `i` set: `modules[i]` is selected.
    Mask(u128),
}

impl TargetSelection<'_> {
    /// Is `modules[index]` (that is, `module`) selected?
    #[inline]
    pub fn contains(&self, index: usize, module: &LinearModule) -> bool {
        match self {
            TargetSelection::Spec(spec) => spec.selects(module),
            TargetSelection::Mask(bits) => (bits >> index) & 1 == 1,
        }
    }
}

impl ModelShape {
    /// Check `spec` against this model (as [`ModelShape::check_targets`]) and resolve it, in one
    /// pass over the names.
    #[inline]
    pub fn select_targets<'a>(
        &self,
        spec: &'a TargetSpec,
    ) -> Result<TargetSelection<'a>, ShapeError> {
        // A group target's modules are known from the shape's precomputed sums.
        if let Some(units) = self.group_adapter_units(spec)
            && units.mask != 0
        {
            return Ok(TargetSelection::Spec(spec));
        }
        self.select_targets_slow(spec)
    }

    #[inline(never)]
    fn select_targets_slow<'a>(
        &self,
        spec: &'a TargetSpec,
    ) -> Result<TargetSelection<'a>, ShapeError> {
        let TargetSpec::Names(names) = spec else {
            self.check_targets(spec)?;
            return Ok(TargetSelection::Spec(spec));
        };
        match self.match_names(names)? {
            Some(0) => Err(ShapeError::NoTargets {
                spec: spec.to_string(),
            }),
            Some(mask) => Ok(TargetSelection::Mask(mask)),
            None => {
                self.check_targets(spec)?;
                Ok(TargetSelection::Spec(spec))
            }
        }
    }

    /// Check `spec` against this model: some name must select a module (as in peft, names that
    /// match nothing beside one that does are ignored), a fused module must be named in full or
    /// not at all, and the selection must not be empty.
    pub fn check_targets(&self, spec: &TargetSpec) -> Result<(), ShapeError> {
        if let TargetSpec::Names(names) = spec {
            self.check_names(names)?;
        }
        // A group's modules are known from the shape's precomputed sums.
        let selects_some = match self.group_adapter_units(spec) {
            Some(units) => units.mask != 0,
            None => self.modules.iter().any(|m| spec.selects(m)),
        };
        if !selects_some {
            return Err(ShapeError::NoTargets {
                spec: spec.to_string(),
            });
        }
        Ok(())
    }

    /// The name checks of [`ModelShape::check_targets`], for a list of module names
    /// (`modules_to_save` too). An empty list selects nothing and passes.
    #[inline]
    pub fn check_names(&self, names: &[String]) -> Result<(), ShapeError> {
        if names.is_empty() {
            return Ok(());
        }
        self.check_some_names(names)
    }

    fn check_some_names(&self, names: &[String]) -> Result<(), ShapeError> {
        self.match_names(names).map(|_| ())
    }

    /// One pass over the modules: checks `names` (an unknown name first, then a fused module
    /// named in part) and returns the selected modules as a bitmask when the model has at most
    /// 128 module kinds (`None` past that).
    fn match_names(&self, names: &[String]) -> Result<Option<u128>, ShapeError> {
        // Which names matched: bits for the first 128, a vector past that (never in practice).
        let mut matched_first = 0u128;
        let mut matched_rest = vec![false; names.len().saturating_sub(128)];
        let mut mask = 0u128;
        let mut partly_named = None;
        for (i, m) in self.modules.iter().enumerate() {
            let mut named = 0;
            for alias in &m.target_names {
                let mut hit = false;
                for (j, name) in names.iter().enumerate() {
                    if alias_matches(m, alias, name) {
                        match j {
                            0..128 => matched_first |= 1 << j,
                            _ => matched_rest[j - 128] = true,
                        }
                        hit = true;
                    }
                }
                named += usize::from(hit);
            }
            if named > 0 {
                if i < 128 {
                    mask |= 1 << i;
                }
                if named < m.target_names.len() && partly_named.is_none() {
                    partly_named = Some(m);
                }
            }
        }
        let matched = |j: usize| match j {
            0..128 => (matched_first >> j) & 1 == 1,
            _ => matched_rest[j - 128],
        };
        // peft accepts a list where some names match nothing, and refuses one where none does.
        if (0..names.len()).all(|j| !matched(j)) {
            return Err(ShapeError::UnknownTarget {
                name: names.join("+"),
                available: self.module_names().join(", "),
            });
        }
        if let Some(m) = partly_named {
            return Err(fused_in_part(m));
        }
        Ok((self.modules.len() <= 128).then_some(mask))
    }

    /// Indices into [`ModelShape::modules`] selected by `spec`, in module order.
    pub fn resolve_targets(&self, spec: &TargetSpec) -> Result<Vec<usize>, ShapeError> {
        self.check_targets(spec)?;
        Ok(self
            .modules
            .iter()
            .enumerate()
            .filter(|(_, m)| spec.selects(m))
            .map(|(i, _)| i)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransformerSpec;

    #[test]
    fn suffix_matching_follows_peft() {
        assert!(path_matches("transformer.h.*.attn.c_proj", "c_proj"));
        assert!(path_matches("transformer.h.*.attn.c_proj", "attn.c_proj"));
        assert!(!path_matches("transformer.h.*.attn.c_proj", "proj"));
    }

    #[test]
    fn one_pass_selection_agrees_with_the_checks() {
        let shape = TransformerSpec::minigpt().build().unwrap();
        for spec in [
            "q_proj+v_proj",
            "o_proj",
            "lm_head",
            "all-linear",
            "mlp",
            "q_proj+nope",
        ] {
            let spec: TargetSpec = spec.parse().unwrap();
            match (shape.select_targets(&spec), shape.resolve_targets(&spec)) {
                (Ok(selection), Ok(indices)) => {
                    let selected: Vec<usize> = (0..shape.modules.len())
                        .filter(|&i| selection.contains(i, &shape.modules[i]))
                        .collect();
                    assert_eq!(selected, indices, "{spec}");
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("{spec}: {a:?} vs {b:?}"),
            }
        }
    }

    /// peft 0.21 (`fixtures/peft/families_counts.json`, the `+nonexistent_proj` records):
    /// a list where some names match is accepted (the others are ignored), one where none
    /// matches is refused.
    #[test]
    fn unknown_target_lists_the_modules() {
        let shape = TransformerSpec::minigpt().build().unwrap();
        let partly = shape.resolve_targets(&"q_proj+nope".parse().unwrap());
        assert_eq!(partly.unwrap(), vec![0]);
        let err = shape
            .resolve_targets(&"nope+nada".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown target module `nope+nada` (peft: target modules not found in the base model); the model has: q_proj, k_proj, v_proj, o_proj, up_proj, down_proj, lm_head"
        );
    }
}
