//! A time series from a CSV column, with its missing values refused or filled.

use crate::{Error, Result};

const OP: &str = "series";

/// What to do with missing values (empty fields, `NaN`, `NA`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fill {
    /// Refuse the series: [`Error::InvalidArgument`] naming the count and the first gap.
    #[default]
    Error,
    /// Linear interpolation between the neighbouring values; the ends repeat the nearest value.
    Linear,
}

impl Fill {
    /// Parses `error | linear`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "error" => Ok(Fill::Error),
            "linear" => Ok(Fill::Linear),
            _ => Err(Error::InvalidArgument {
                op: OP,
                name: "fill",
                reason: format!("{s:?} is not one of error, linear"),
            }),
        }
    }
}

/// One column of a comma-separated file with a header line: `None` where the field is empty,
/// `NaN` or `NA`. Errors: [`Error::InvalidArgument`] for a missing column or a field that is not
/// a number.
pub fn csv_column(text: &str, column: &str) -> Result<Vec<Option<f64>>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    let names: Vec<&str> = header.split(',').map(|s| s.trim()).collect();
    let idx = names
        .iter()
        .position(|n| *n == column)
        .ok_or_else(|| Error::InvalidArgument {
            op: OP,
            name: "column",
            reason: format!("no column {column:?} (the header has {names:?})"),
        })?;
    lines
        .enumerate()
        .map(|(row, line)| {
            let field = line.split(',').nth(idx).unwrap_or("").trim();
            if field.is_empty() || field.eq_ignore_ascii_case("nan") || field == "NA" {
                return Ok(None);
            }
            field.parse().map(Some).map_err(|_| Error::InvalidArgument {
                op: OP,
                name: "column",
                reason: format!("data row {row}: {field:?} is not a number"),
            })
        })
        .collect()
}

/// The series with its gaps handled by `fill`. Errors: [`Error::InvalidArgument`] when values
/// are missing under [`Fill::Error`] or when every value is missing.
pub fn fill(values: &[Option<f64>], fill: Fill) -> Result<Vec<f64>> {
    let missing = values.iter().filter(|v| v.is_none()).count();
    if missing == 0 {
        return Ok(values.iter().map(|v| v.unwrap()).collect());
    }
    let first = values.iter().position(|v| v.is_none()).unwrap();
    if fill == Fill::Error || missing == values.len() {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "series",
            reason: format!(
                "{missing} of {} values are missing (first at data row {first}); \
                 fill them with linear interpolation (`--fill linear`)",
                values.len()
            ),
        });
    }
    let known: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|x| (i, x)))
        .collect();
    let mut out = Vec::with_capacity(values.len());
    let mut k = 0; // known[k] is the first known point at or after i
    for (i, v) in values.iter().enumerate() {
        while k < known.len() && known[k].0 < i {
            k += 1;
        }
        out.push(match *v {
            Some(x) => x,
            None if k == 0 => known[0].1,
            None if k == known.len() => known[k - 1].1,
            None => {
                let ((i0, x0), (i1, x1)) = (known[k - 1], known[k]);
                x0 + (x1 - x0) * (i - i0) as f64 / (i1 - i0) as f64
            }
        });
    }
    Ok(out)
}
