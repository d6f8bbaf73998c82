//! A reader of the Prometheus text format (version 0.0.4), enough for
//! `herald top` to read the broker's own `/metrics`: samples with their
//! labels and values; comments, `# HELP` and `# TYPE` lines are skipped,
//! as are timestamps. (No well-kept parser crate exists for it:
//! `prometheus-client` only writes the format.)

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
}

/// Reads every sample of `text`.
///
/// # Errors
/// The first line that is not a comment, blank or a well-formed sample.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |reason| ParseError {
            line: i + 1,
            reason,
        };
        out.push(sample(line).map_err(fail)?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = read_labels(r, &mut labels)?;
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: number(value)?,
    })
}

/// Reads `key="value",...}` into `labels`; returns what follows the `}`.
fn read_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

fn number(s: &str) -> Result<f64, &'static str> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| "value is not a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_and_escapes() {
        let text = "# HELP x_total A counter.\n# TYPE x_total counter\n\
                    x_total 3\n\
                    y{topic=\"a\\\"b\\\\c\\nd\",group=\"g\"} 1.5e3 1700000000\n\
                    h_bucket{le=\"+Inf\"} 7\n\
                    z{} -2\n\
                    \n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x_total");
        assert!(s[0].labels.is_empty());
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("topic"), Some("a\"b\\c\nd"));
        assert_eq!(s[1].label("group"), Some("g"));
        assert_eq!(s[1].value, 1500.0);
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(s[3].value, -2.0);
    }

    #[test]
    fn refuses_malformed_lines() {
        assert_eq!(parse("x\n").unwrap_err().line, 1);
        assert!(parse("ok 1\nx{a=\"b} 1\n").is_err());
        assert!(parse("x{a=b} 1\n").is_err());
        assert!(parse("x one\n").is_err());
        assert!(parse("x{a=\"b\"}\n").is_err());
        assert!(parse("x +Inf\ny NaN\n").is_ok());
    }
}
