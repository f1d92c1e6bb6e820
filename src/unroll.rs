//! Textual loop unrolling for WGSL register tiles.
//!
//! A line `// #unroll NAME COUNT` before a `{ ... }` block repeats the block COUNT times, each copy
//! opening with `let NAME = <i>u;`. COUNT is a product or quotient of literals and `const` names of
//! the (already specialised) source, such as `TR * TC4`.
//!
//! Why: Mesa's NIR (lavapipe) unrolls a loop only while its unrolled size stays under a budget. A
//! register tile indexed by a loop counter that stays a loop is moved to memory, and the whole
//! contraction slows 2–2.5× (measured on the chunk engine's output loop, where four guarded
//! stores per vec4 pushed the loop past the budget). Copies made here never depend on that budget.

use std::collections::HashMap;

const MARK: &str = "// #unroll ";

/// `src` with every `#unroll` block expanded (inner blocks first), in one pass.
pub(crate) fn expand(src: &str) -> Result<String, String> {
    if !src.contains(MARK) {
        return Ok(src.to_string());
    }
    let consts = const_table(src);
    expand_in(src, &consts)
}

fn expand_in(text: &str, consts: &HashMap<&str, &str>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let line_end = rest[at..].find('\n').map_or(rest.len(), |e| at + e);
        let spec = rest[at + MARK.len()..line_end].trim();
        let (name, count) = spec
            .split_once(' ')
            .ok_or_else(|| format!("`#unroll {spec}`: expected NAME COUNT"))?;
        let n = eval(consts, count.trim(), 0)?;
        let open = line_end
            + rest[line_end..]
                .find('{')
                .ok_or_else(|| format!("`#unroll {spec}`: no block follows"))?;
        let close = block_end(rest, open).ok_or_else(|| format!("`#unroll {spec}`: unclosed"))?;
        let body = expand_in(&rest[open + 1..close], consts)?;
        for i in 0..n {
            out += &format!("{{ let {name} = {i}u;{body}}}\n");
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `NAME -> EXPR` of every `const NAME: u32 = EXPR;` line.
fn const_table(src: &str) -> HashMap<&str, &str> {
    src.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().strip_prefix("const ")?.split_once(": u32 = ")?;
            Some((name.trim(), rest.split(';').next()?.trim()))
        })
        .collect()
}

/// The index of the `}` closing the `{` at `open` (braces inside `//` comments are skipped).
fn block_end(code: &str, open: usize) -> Option<usize> {
    let b = code.as_bytes();
    let (mut depth, mut i) = (0usize, open);
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = code[i..].find('\n').map_or(b.len(), |e| i + e);
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Evaluates `a * b / c ...` (left to right) of literals and `const` names.
fn eval(consts: &HashMap<&str, &str>, expr: &str, depth: u32) -> Result<u32, String> {
    if depth > 8 {
        return Err(format!("`{expr}`: constants nest too deep"));
    }
    let mut acc: Option<u32> = None;
    let mut op = '*';
    for tok in expr.split_whitespace() {
        if tok == "*" || tok == "/" {
            op = tok.chars().next().unwrap_or('*');
            continue;
        }
        let v = match tok.trim_end_matches('u').parse::<u32>() {
            Ok(v) => v,
            Err(_) => {
                let e = consts
                    .get(tok)
                    .ok_or_else(|| format!("`{tok}`: not a `const NAME: u32`"))?;
                eval(consts, e, depth + 1)?
            }
        };
        acc = Some(match (acc, op) {
            (None, _) => v,
            (Some(a), '*') => a * v,
            (Some(_), _) if v == 0 => return Err(format!("`{expr}`: division by 0")),
            (Some(a), _) => a / v,
        });
    }
    acc.ok_or_else(|| format!("`{expr}`: empty count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_repeated_with_their_index() {
        let src = "const TR: u32 = 4u;\nconst TR2: u32 = TR / 2u;\nfn f() {\n    // #unroll k TR2 * 3\n    {\n        a[k] = 1.0; // {braces}\n    }\n}\n";
        let out = expand(src).unwrap();
        assert!(!out.contains("#unroll"));
        for i in 0..6 {
            assert!(out.contains(&format!("{{ let k = {i}u;")), "{out}");
        }
        assert!(!out.contains("let k = 6u;"));
        assert_eq!(out.matches("a[k] = 1.0;").count(), 6);
    }

    #[test]
    fn nested_blocks_expand() {
        let src = "// #unroll i 2\n{\n// #unroll j 3\n{ x[i][j] = 0; }\n}\n";
        let out = expand(src).unwrap();
        assert_eq!(out.matches("x[i][j] = 0;").count(), 6);
        assert_eq!(out.matches("let i = 1u;").count(), 1);
        assert_eq!(out.matches("let j = 2u;").count(), 2);
    }

    #[test]
    fn bad_directives_are_errors() {
        assert!(expand("// #unroll k\n{ }").is_err());
        assert!(expand("// #unroll k NOPE\n{ }").is_err());
        assert!(expand("// #unroll k 4\n{ ").is_err());
        assert!(expand("// #unroll k 4 / 0\n{ }").is_err());
    }
}
