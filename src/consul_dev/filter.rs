//! A subset of Consul's `?filter=` expression language (go-bexpr) for the health endpoint.
//!
//! Supported: `Selector == "v"`, `!=`, `"v" in Selector`, `"v" not in Selector`,
//! `Selector contains "v"`, `Selector not contains "v"`, `Selector is empty`,
//! `Selector is not empty`, combined with `and`, `or`, `not` and parentheses. Selectors:
//! `Service.ID|Service|Address|Port|Tags|Meta|Meta.<key>` and `Node.Node|Address|Datacenter`.
//! Anything else is refused with Consul's 400 text, never guessed at. Pure.

use std::collections::BTreeMap;

use super::state::HealthEntry;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// `sel == v` (or `!=` when negated by the parser).
    Equal(Vec<String>, String),
    /// `v in sel` / `sel contains v`.
    In(Vec<String>, String),
    /// `sel is empty`.
    Empty(Vec<String>),
}

/// Why a filter was refused (the 400 text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to create boolean expression evaluator: {0}")]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, FilterError> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op("=="));
                i += 2;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op("!="));
                i += 2;
            }
            '"' | '`' => {
                let quote = c;
                let mut val = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(FilterError("unterminated string".to_string())),
                        Some('\\') if quote == '"' => {
                            match chars.get(i + 1) {
                                Some(n) => val.push(*n),
                                None => return Err(FilterError("unterminated string".to_string())),
                            }
                            i += 2;
                        }
                        Some(ch) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            val.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(val));
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '/' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.' | '/'))
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => return Err(FilterError(format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x == w)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.next() != Some(Tok::RParen) {
                return Err(FilterError("expected ')'".to_string()));
            }
            return Ok(e);
        }
        self.matcher()
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.next() {
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => Ok(s),
            other => Err(FilterError(format!("expected a value, got {other:?}"))),
        }
    }

    fn selector(&mut self) -> Result<Vec<String>, FilterError> {
        match self.next() {
            Some(Tok::Word(w)) => {
                let sel: Vec<String> = w.split('.').map(str::to_string).collect();
                validate_selector(&sel)?;
                Ok(sel)
            }
            other => Err(FilterError(format!("expected a selector, got {other:?}"))),
        }
    }

    fn matcher(&mut self) -> Result<Expr, FilterError> {
        // `"value" [not] in Selector`
        if let Some(Tok::Str(v)) = self.toks.get(self.pos).cloned() {
            self.pos += 1;
            let negate = if self.peek_word("not") {
                self.pos += 1;
                true
            } else {
                false
            };
            if !self.peek_word("in") {
                return Err(FilterError("expected 'in' after a value".to_string()));
            }
            self.pos += 1;
            let sel = self.selector()?;
            let e = Expr::In(sel, v);
            return Ok(if negate { Expr::Not(Box::new(e)) } else { e });
        }
        let sel = self.selector()?;
        match self.next() {
            Some(Tok::Op("==")) => Ok(Expr::Equal(sel, self.value()?)),
            Some(Tok::Op("!=")) => Ok(Expr::Not(Box::new(Expr::Equal(sel, self.value()?)))),
            Some(Tok::Word(w)) if w == "contains" => Ok(Expr::In(sel, self.value()?)),
            Some(Tok::Word(w)) if w == "not" => {
                if self.peek_word("contains") {
                    self.pos += 1;
                    Ok(Expr::Not(Box::new(Expr::In(sel, self.value()?))))
                } else {
                    Err(FilterError("expected 'contains' after 'not'".to_string()))
                }
            }
            Some(Tok::Word(w)) if w == "is" => {
                let negate = if self.peek_word("not") {
                    self.pos += 1;
                    true
                } else {
                    false
                };
                if !self.peek_word("empty") {
                    return Err(FilterError("expected 'empty' after 'is'".to_string()));
                }
                self.pos += 1;
                let e = Expr::Empty(sel);
                Ok(if negate { Expr::Not(Box::new(e)) } else { e })
            }
            other => Err(FilterError(format!(
                "unsupported operator {other:?} (supported: ==, !=, in, not in, contains, is empty)"
            ))),
        }
    }
}

fn validate_selector(sel: &[String]) -> Result<(), FilterError> {
    let ok = matches!(
        sel.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        [
            "Service",
            "ID" | "Service" | "Address" | "Port" | "Tags" | "Meta"
        ] | ["Service", "Meta", _]
            | ["Node", "Node" | "Address" | "Datacenter"]
    );
    if ok {
        Ok(())
    } else {
        Err(FilterError(format!(
            "Selector {:?} is not valid",
            sel.join(".")
        )))
    }
}

/// Parses a filter expression.
pub fn parse(s: &str) -> Result<Expr, FilterError> {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err(FilterError("empty expression".to_string()));
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(FilterError(format!(
            "unexpected input after position {}",
            p.pos
        )));
    }
    Ok(e)
}

enum Val {
    Str(String),
    List(Vec<String>),
    Map(BTreeMap<String, String>),
    Missing,
}

fn resolve(sel: &[String], e: &HealthEntry, node: &str, node_address: &str, dc: &str) -> Val {
    let s = &e.service;
    match sel
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["Service", "ID"] => Val::Str(s.id.clone()),
        ["Service", "Service"] => Val::Str(s.name.clone()),
        ["Service", "Address"] => Val::Str(s.address.clone()),
        ["Service", "Port"] => Val::Str(s.port.to_string()),
        ["Service", "Tags"] => Val::List(s.tags.clone()),
        ["Service", "Meta"] => Val::Map(s.meta.clone()),
        ["Service", "Meta", k] => s
            .meta
            .get(*k)
            .map(|v| Val::Str(v.clone()))
            .unwrap_or(Val::Missing),
        ["Node", "Node"] => Val::Str(node.to_string()),
        ["Node", "Address"] => Val::Str(node_address.to_string()),
        ["Node", "Datacenter"] => Val::Str(dc.to_string()),
        _ => Val::Missing,
    }
}

/// Evaluates an expression on one health entry.
pub fn matches(expr: &Expr, e: &HealthEntry, node: &str, node_address: &str, dc: &str) -> bool {
    match expr {
        Expr::And(a, b) => {
            matches(a, e, node, node_address, dc) && matches(b, e, node, node_address, dc)
        }
        Expr::Or(a, b) => {
            matches(a, e, node, node_address, dc) || matches(b, e, node, node_address, dc)
        }
        Expr::Not(a) => !matches(a, e, node, node_address, dc),
        Expr::Equal(sel, v) => {
            matches!(resolve(sel, e, node, node_address, dc), Val::Str(s) if &s == v)
        }
        Expr::In(sel, v) => match resolve(sel, e, node, node_address, dc) {
            Val::Str(s) => s.contains(v.as_str()),
            Val::List(l) => l.iter().any(|x| x == v),
            Val::Map(m) => m.contains_key(v),
            Val::Missing => false,
        },
        Expr::Empty(sel) => match resolve(sel, e, node, node_address, dc) {
            Val::Str(s) => s.is_empty(),
            Val::List(l) => l.is_empty(),
            Val::Map(m) => m.is_empty(),
            Val::Missing => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul_dev::state::ServiceEntry;

    fn entry(tags: &[&str], meta: &[(&str, &str)]) -> HealthEntry {
        HealthEntry {
            service: ServiceEntry {
                id: "w-1".into(),
                name: "w".into(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
                meta: meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                address: "10.0.0.1".into(),
                port: 80,
                weights: (1, 1),
                enable_tag_override: false,
                create_index: 1,
                modify_index: 1,
            },
            checks: Vec::new(),
        }
    }

    fn eval(f: &str, e: &HealthEntry) -> bool {
        matches(&parse(f).unwrap(), e, "n", "127.0.0.1", "dc1")
    }

    #[test]
    fn supported_expressions() {
        let e = entry(&["shard-7", "v1"], &[("shard", "7")]);
        assert!(eval(r#"Service.Meta.shard == "7""#, &e));
        assert!(!eval(r#"Service.Meta.shard == "8""#, &e));
        assert!(eval(r#"Service.Meta.shard != "8""#, &e));
        assert!(eval(r#""shard-7" in Service.Tags"#, &e));
        assert!(!eval(r#""shard-8" in Service.Tags"#, &e));
        assert!(eval(r#""shard-8" not in Service.Tags"#, &e));
        assert!(eval(r#"Service.Tags contains "v1""#, &e));
        assert!(eval(r#""shard" in Service.Meta"#, &e));
        assert!(eval(r#"Service.Meta.missing is empty"#, &e));
        assert!(eval(r#"Service.Tags is not empty"#, &e));
        assert!(eval(
            r#"(Service.Meta.shard == "7" and "v1" in Service.Tags) or Service.ID == "x""#,
            &e
        ));
        assert!(!eval(r#"not Service.Meta.shard == "7""#, &e));
        assert!(eval(r#"Service.Port == 80"#, &e));
    }

    #[test]
    fn unsupported_expressions_are_refused() {
        assert!(parse("Service.Weights.Passing == 1").is_err());
        assert!(parse(r#"Service.Meta.x matches "a.*""#).is_err());
        assert!(parse(r#"Service.Meta.x == "a"#).is_err());
        assert!(parse("(Service.ID == x").is_err());
        assert!(parse("").is_err());
        assert!(parse("Service.ID == x y").is_err());
        assert!(parse("é ~").is_err());
    }
}
