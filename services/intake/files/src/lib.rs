//! The funds' contact files, read on the server: CSV with `;` or `,`, UTF-8 (with or without
//! BOM) or Windows-1252, one contact per row, the columns of the campaign's theme.
//!
//! Everything here is pure and incremental: [`HeaderReader`] finds the header, encoding and
//! separator in the first bytes; [`RowParser`] takes the rest in chunks of any size and yields
//! complete rows with the byte offset where each ends, holding at most one row in memory;
//! [`ColumnMap`] turns a row into a `ContactSubmission` for the usual validation. The intake
//! service stores the offset of the last committed row, so an upload resumes there with a fresh
//! parser.

mod columns;
mod rows;

pub use columns::{ColumnMap, COLUMNS};
pub use rows::{Header, HeaderReader, RawRow, RowParser};

/// How a file's bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Utf8,
    Windows1252,
}

impl Encoding {
    pub fn code(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Windows1252 => "windows-1252",
        }
    }

    pub fn from_code(code: &str) -> Option<Encoding> {
        match code {
            "utf-8" => Some(Encoding::Utf8),
            "windows-1252" => Some(Encoding::Windows1252),
            _ => None,
        }
    }

    /// UTF-8 when the sample is valid UTF-8 (a character cut at the sample's end is fine),
    /// else Windows-1252, which every byte sequence is.
    pub fn detect(sample: &[u8]) -> Encoding {
        match std::str::from_utf8(sample) {
            Ok(_) => Encoding::Utf8,
            // `error_len() == None`: the sample ends inside a character, not an invalid byte.
            Err(e) if e.error_len().is_none() => Encoding::Utf8,
            Err(_) => Encoding::Windows1252,
        }
    }

    /// The text of a cell; `None` when the bytes are not valid in this encoding.
    pub fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Encoding::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_string),
            Encoding::Windows1252 => Some(
                encoding_rs::WINDOWS_1252
                    .decode_without_bom_handling(bytes)
                    .0
                    .into_owned(),
            ),
        }
    }
}

/// Sizes a file may not exceed (the intake service reads them from its environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The bytes of one row's cells (the header line included).
    pub max_row_bytes: usize,
    /// The characters of one cell.
    pub max_field_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_row_bytes: 16 * 1024,
            max_field_chars: 1000,
        }
    }
}

/// More columns than any theme has: a row with more cells is refused without reading them.
pub const MAX_CELLS: usize = 64;

/// A whole file refused (nothing of it is read). Messages never quote the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty or has no header line")]
    NoHeader,
    #[error("the header line is longer than {0} bytes (is it a CSV file?)")]
    HeaderTooLong(usize),
    #[error("the file holds NUL bytes: it looks like UTF-16 or binary data; save it as CSV UTF-8 or Windows-1252")]
    Binary,
    #[error("the header is not valid {0}")]
    HeaderEncoding(&'static str),
    #[error("column {position} of the header is not a known column name (is the header line missing?); accepted: {accepted}")]
    UnknownColumn { position: usize, accepted: String },
    #[error(
        "column {column:?} is not allowed by the theme {theme} (data minimisation): remove it"
    )]
    ColumnNotAllowed {
        column: &'static str,
        theme: &'static str,
    },
    #[error("column {0:?} appears twice")]
    DuplicateColumn(&'static str),
    #[error("the theme {theme} requires the column(s) {missing}")]
    MissingColumns {
        theme: &'static str,
        missing: String,
    },
}

impl FileError {
    /// The machine-readable rule, as in the README's table.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::NoHeader => "csv.no_header",
            FileError::HeaderTooLong(_) => "csv.header_too_long",
            FileError::Binary | FileError::HeaderEncoding(_) => "file.encoding",
            FileError::UnknownColumn { .. } => "csv.unknown_column",
            FileError::ColumnNotAllowed { .. } => "csv.column_not_allowed",
            FileError::DuplicateColumn(_) => "csv.duplicate_column",
            FileError::MissingColumns { .. } => "csv.missing_column",
        }
    }
}

/// A row refused before validation: its number (the header is row 1), the column at fault
/// (empty when the whole row is), the rule and a message that never quotes the cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: u64,
    pub column: String,
    pub rule: &'static str,
    pub message: String,
}

/// `;` unless the header line has more commas than semicolons.
pub fn detect_delimiter(header_line: &[u8]) -> u8 {
    let count = |b: u8| header_line.iter().filter(|&&c| c == b).count();
    if count(b',') > count(b';') {
        b','
    } else {
        b';'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_detected() {
        assert_eq!(Encoding::detect("nom;prénom".as_bytes()), Encoding::Utf8);
        assert_eq!(Encoding::detect(b"nom;pr\xE9nom"), Encoding::Windows1252);
        // A sample cut in the middle of "é" is still UTF-8.
        assert_eq!(Encoding::detect(b"nom;pr\xC3"), Encoding::Utf8);
        assert_eq!(
            Encoding::Windows1252.decode(b"pr\xE9nom\x80").as_deref(),
            Some("prénom€")
        );
        assert_eq!(Encoding::Utf8.decode(b"pr\xE9nom"), None);
        for e in [Encoding::Utf8, Encoding::Windows1252] {
            assert_eq!(Encoding::from_code(e.code()), Some(e));
        }
    }

    #[test]
    fn delimiters() {
        assert_eq!(detect_delimiter(b"a;b;c"), b';');
        assert_eq!(detect_delimiter(b"a,b,c"), b',');
        assert_eq!(detect_delimiter(b"a;b,c"), b';');
    }
}
