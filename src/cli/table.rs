//! The one table printer of the CLI, in kubectl's style: every column left-aligned under its
//! header, as wide as its widest cell, three spaces between columns (kubectl's tabwriter
//! padding), no borders, `<none>` for an empty cell.

use std::fmt;

use serde_json::Value;

const GAP: &str = "   ";
const NONE: &str = "<none>";

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// One row, a cell per header. A cell stays on its line: line breaks become spaces.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(|c| {
                let c = c.replace(['\r', '\n', '\t'], " ");
                if c.trim().is_empty() {
                    NONE.to_owned()
                } else {
                    c
                }
            })
            .collect();
        row.resize(self.headers.len(), NONE.to_owned());
        self.rows.push(row);
    }
}

/// A JSON value as a cell: strings without their quotes, null as empty.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |i: usize| {
            let cells = self.rows.iter().map(|r| r[i].chars().count());
            cells.chain([self.headers[i].chars().count()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                if i + 1 < row.len() {
                    line.push_str(&format!("{c:<w$}{GAP}", w = widths[i]));
                } else {
                    line.push_str(c);
                }
            }
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_three_spaces_apart() {
        let mut t = Table::new(&["KIND", "NAME", "VERSION", "SEQ"]);
        t.row(["HTTPRoute".into(), "users".into(), cell(&Value::from(1)), cell(&Value::from(2))]);
        t.row(["Service".into(), "a-much-longer-name".into(), "12".into(), "1034".into()]);
        assert_eq!(
            t.to_string(),
            "KIND        NAME                 VERSION   SEQ\n\
             HTTPRoute   users                1         2\n\
             Service     a-much-longer-name   12        1034\n"
        );
    }

    #[test]
    fn empty_cells_say_none_and_cells_stay_on_one_line() {
        let mut t = Table::new(&["ID", "ACKED", "LAST NACK"]);
        t.row(["web-1".into(), cell(&Value::Null), String::new()]);
        t.row(["web-2".into(), cell(&Value::from(7)), "v7: bad\nconfig".into()]);
        t.row(["web-3".into()]);
        assert_eq!(
            t.to_string(),
            "ID      ACKED    LAST NACK\n\
             web-1   <none>   <none>\n\
             web-2   7        v7: bad config\n\
             web-3   <none>   <none>\n"
        );
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(Table::new(&["KIND", "NAME"]).to_string(), "KIND   NAME\n");
    }

    #[test]
    fn json_values_become_plain_text() {
        assert_eq!(cell(&Value::from("users")), "users");
        assert_eq!(cell(&Value::Bool(true)), "true");
        assert_eq!(cell(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
    }
}
