//! Typed access to a recipe's keys, recording what was read, the defaults applied and the keys
//! not modelled.

use crate::{RecipeError, Unmodelled};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub(crate) struct Doc<'a> {
    map: &'a Map<String, Value>,
    folder: Option<PathBuf>,
    pub read: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub unmodelled: Vec<Unmodelled>,
}

/// A value as a recipe writes it, for messages.
pub(crate) fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl<'a> Doc<'a> {
    pub fn new(map: &'a Map<String, Value>, folder: Option<&Path>) -> Self {
        Doc {
            map,
            folder: folder.map(Path::to_path_buf),
            read: Vec::new(),
            notes: Vec::new(),
            unmodelled: Vec::new(),
        }
    }

    /// The value at a dotted key (`tokenizer.max_seq_len`); null counts as absent.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        let mut parts = key.split('.');
        let mut v = self.map.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        (!v.is_null()).then_some(v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    fn note_read(&mut self, key: &str, v: &Value) {
        self.read.push((key.to_string(), shown(v)));
    }

    fn invalid(key: &str, v: &Value, expected: &str) -> RecipeError {
        RecipeError::Invalid {
            key: key.to_string(),
            value: shown(v),
            expected: expected.to_string(),
        }
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, RecipeError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        self.note_read(key, v);
        match v {
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            _ => Err(Self::invalid(key, v, "a string")),
        }
    }

    pub fn flag(&mut self, key: &str) -> Result<Option<bool>, RecipeError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        self.note_read(key, v);
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            _ => Err(Self::invalid(key, v, "true or false")),
        }
    }

    pub fn uint(&mut self, key: &str) -> Result<Option<u64>, RecipeError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        self.note_read(key, v);
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.filter(|&n| n > 0)
            .map(Some)
            .ok_or_else(|| Self::invalid(key, v, "a positive integer"))
    }

    /// A list of strings; a single string is a one-element list, or split at commas when
    /// `commas` (LLaMA-Factory writes `q_proj,v_proj`).
    pub fn list(&mut self, key: &str, commas: bool) -> Result<Option<Vec<String>>, RecipeError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        self.note_read(key, v);
        match v {
            Value::String(s) if commas => Ok(Some(
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
            )),
            Value::String(s) => Ok(Some(vec![s.clone()])),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(Self::invalid(key, v, "a list of names")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(Self::invalid(key, v, "a list of names")),
        }
    }

    /// A list of layer indices (peft's `layers_to_transform`: an int or a list of ints).
    pub fn layers(&mut self, key: &str) -> Result<Option<Vec<u64>>, RecipeError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        self.note_read(key, v);
        let one = |i: &Value| i.as_u64();
        let out = match v {
            Value::Array(items) => items.iter().map(one).collect::<Option<Vec<_>>>(),
            other => one(other).map(|n| vec![n]),
        };
        out.filter(|l| !l.is_empty())
            .map(Some)
            .ok_or_else(|| Self::invalid(key, v, "a layer index or a list of them"))
    }

    /// A mapping of names to positive integers (peft's `rank_pattern`).
    pub fn ranks(&mut self, key: &str) -> Result<Vec<(String, u64)>, RecipeError> {
        let Some(v) = self.raw(key) else {
            return Ok(Vec::new());
        };
        self.note_read(key, v);
        let Some(map) = v.as_object() else {
            return Err(Self::invalid(key, v, "a mapping of module names to ranks"));
        };
        map.iter()
            .map(|(k, r)| match r.as_u64().filter(|&r| r > 0) {
                Some(r) => Ok((k.clone(), r)),
                None => Err(Self::invalid(key, v, "a mapping of module names to ranks")),
            })
            .collect()
    }

    /// A key present and not `false`, `0`, an empty string or an empty list: worth reporting.
    pub fn set(&self, key: &str) -> Option<&'a Value> {
        self.raw(key).filter(|v| match v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty() && s != "false" && s != "none",
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Null => false,
        })
    }

    /// Report `key` as not modelled when it is set.
    pub fn unmodelled_if_set(&mut self, key: &str, why: &str) {
        if let Some(v) = self.set(key) {
            self.unmodelled.push(Unmodelled {
                key: key.to_string(),
                value: shown(v),
                why: why.to_string(),
            });
        }
    }

    /// Report every set key starting with `prefix` as not modelled.
    pub fn unmodelled_prefix(&mut self, prefix: &str, why: &str) {
        let keys: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with(prefix))
            // A key read and modelled is not listed again.
            .filter(|k| !self.read.iter().any(|(read, _)| read == *k))
            .cloned()
            .collect();
        for k in keys {
            self.unmodelled_if_set(&k, why);
        }
    }

    pub fn unmodelled(&mut self, key: &str, value: &str, why: &str) {
        self.unmodelled.push(Unmodelled {
            key: key.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// A file the recipe names, relative to the recipe's folder.
    pub fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        match &self.folder {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}
