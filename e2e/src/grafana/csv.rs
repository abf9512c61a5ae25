//! `psql --csv` output (RFC 4180) read into rows of text.

/// A result: column names and rows of text (NULL = "").
#[derive(Debug)]
pub struct Rows {
    /// Column names, in order.
    pub cols: Vec<String>,
    /// One entry per row, one text per column.
    pub rows: Vec<Vec<String>>,
}

impl Rows {
    /// The index of column `name`; panics naming the columns there are.
    pub fn col(&self, name: &str) -> usize {
        self.cols
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.cols))
    }

    /// Row `row`'s value in column `name`.
    pub fn get(&self, row: usize, name: &str) -> &str {
        &self.rows[row][self.col(name)]
    }

    /// Every row's value in column `name`.
    pub fn column(&self, name: &str) -> Vec<&str> {
        let c = self.col(name);
        self.rows.iter().map(|r| r[c].as_str()).collect()
    }
}

/// RFC 4180 CSV as `psql --csv` writes it.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_commas_quotes_and_newlines() {
        let text = "a,b,c\n1,\"x, y\",\"say \"\"hi\"\"\"\n2,\"two\nlines\",\n";
        assert_eq!(
            parse_csv(text),
            [
                vec!["a", "b", "c"],
                vec!["1", "x, y", "say \"hi\""],
                vec!["2", "two\nlines", ""],
            ]
        );
    }

    #[test]
    fn last_line_without_newline_and_empty_input() {
        assert_eq!(parse_csv("x\n7"), [vec!["x"], vec!["7"]]);
        assert!(parse_csv("").is_empty());
    }

    #[test]
    fn rows_by_column_name() {
        let mut lines = parse_csv("site,state\nsite-a,online\nsite-b,\n");
        let cols = lines.remove(0);
        let r = Rows { cols, rows: lines };
        assert_eq!(r.get(0, "state"), "online");
        assert_eq!(r.column("site"), ["site-a", "site-b"]);
        assert_eq!(r.get(1, "state"), "", "NULL is empty");
    }

    #[test]
    #[should_panic(expected = "no column nope")]
    fn unknown_column_names_the_columns() {
        Rows {
            cols: vec!["a".into()],
            rows: vec![],
        }
        .col("nope");
    }
}
