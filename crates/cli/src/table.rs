//! Plain-text tables: a header row and columns padded to their widest cell.

use std::fmt::Write as _;

/// A table built row by row, printed with [`Table::render`].
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns two spaces apart; the
    /// last column is not padded.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .header
            .iter()
            .map(|title| title.chars().count())
            .collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|title| title.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            for (index, cell) in row.iter().enumerate() {
                if index == last {
                    out.push_str(cell);
                } else {
                    let _ = write!(out, "{cell:<width$}  ", width = widths[index]);
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The value, or `-` where there is none.
pub fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// `text` cut to `max` characters, with an ellipsis where it was cut.
pub fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_titles() {
        let mut table = Table::new(vec!["SEQ", "ERROR"]);
        table.row(vec!["7".into(), "declined".into()]);
        table.row(vec!["1234".into(), "timeout".into()]);
        assert_eq!(
            table.render(),
            "SEQ   ERROR\n7     declined\n1234  timeout\n"
        );
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(shortened("card declined", 4), "car…");
        assert_eq!(shortened("card", 4), "card");
    }
}
