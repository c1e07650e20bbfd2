//! Incremental CSV reading: the header first, then rows as the bytes arrive.

use crate::{detect_delimiter, Encoding, FileError, Limits, RowError, MAX_CELLS};
use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Bytes looked at to tell UTF-8 from Windows-1252 when the encoding is not declared.
pub const ENCODING_SAMPLE: usize = 64 * 1024;

/// What the start of a file says about the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub encoding: Encoding,
    pub delimiter: u8,
    /// The header's cells, trimmed.
    pub cells: Vec<String>,
    /// The byte offset of the first data row (after the BOM and the header line).
    pub end: u64,
}

/// Gathers the first bytes of a file until the header line is complete and, unless the
/// encoding is declared, enough of the file is seen to tell its encoding.
pub struct HeaderReader {
    buf: Vec<u8>,
    declared: Option<Encoding>,
    limits: Limits,
}

impl HeaderReader {
    pub fn new(declared: Option<Encoding>, limits: Limits) -> Self {
        HeaderReader {
            buf: Vec::new(),
            declared,
            limits,
        }
    }

    /// Adds the next bytes of the file (`eof`: there are no more). Returns the header and the
    /// bytes that follow it once the header is known, `None` while more bytes are needed.
    pub fn push(&mut self, data: &[u8], eof: bool) -> Result<Option<(Header, Vec<u8>)>, FileError> {
        self.buf.extend_from_slice(data);
        if self.buf.len() < BOM.len() && !eof {
            return Ok(None);
        }
        let bom = if self.buf.starts_with(BOM) {
            BOM.len()
        } else {
            0
        };
        let text = &self.buf[bom..];
        let line_end = text.iter().position(|&b| b == b'\n');
        let line = match line_end {
            Some(i) if i > self.limits.max_row_bytes => {
                return Err(FileError::HeaderTooLong(self.limits.max_row_bytes))
            }
            Some(i) => &text[..i],
            None if text.len() > self.limits.max_row_bytes => {
                return Err(FileError::HeaderTooLong(self.limits.max_row_bytes))
            }
            None if !eof => return Ok(None),
            None => text,
        };
        let sampled = eof || self.declared.is_some() || bom > 0 || text.len() >= ENCODING_SAMPLE;
        if !sampled {
            return Ok(None);
        }
        if line.contains(&0) {
            return Err(FileError::Binary);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(FileError::NoHeader);
        }
        let encoding = match (self.declared, bom) {
            (Some(e), _) => e,
            (None, 3) => Encoding::Utf8,
            _ => Encoding::detect(&text[..text.len().min(ENCODING_SAMPLE)]),
        };
        let delimiter = detect_delimiter(line);
        let mut parser = RowParser::new(delimiter, self.limits, 0, 1);
        let mut rows = Vec::new();
        parser.feed(line, &mut rows);
        parser.finish(&mut rows);
        let cells = match rows.into_iter().next().map(|r| r.cells) {
            Some(Ok(cells)) => cells,
            Some(Err(_)) => return Err(FileError::HeaderTooLong(self.limits.max_row_bytes)),
            None => return Err(FileError::NoHeader),
        };
        let cells = cells
            .iter()
            .map(|c| encoding.decode(c).map(|s| s.trim().to_string()))
            .collect::<Option<Vec<String>>>()
            .ok_or(FileError::HeaderEncoding(encoding.code()))?;
        let end = bom + line_end.map_or(text.len(), |i| i + 1);
        let rest = self.buf[end..].to_vec();
        self.buf = Vec::new();
        Ok(Some((
            Header {
                encoding,
                delimiter,
                cells,
                end: end as u64,
            },
            rest,
        )))
    }
}

/// A row as read: its number (the header is row 1), the offset just after it, and its cells'
/// bytes, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub row: u64,
    pub end: u64,
    pub cells: Result<Vec<Vec<u8>>, RowError>,
}

/// Reads rows from bytes fed in chunks of any size, holding at most one row.
///
/// A row longer than the limit (or with more than [`MAX_CELLS`] cells) is refused and skipped
/// up to the next line feed, where reading starts afresh: a stray quote cannot swallow the rest
/// of the file, only the row it is in and, at worst, the lines up to the limit.
pub struct RowParser {
    reader: Reader,
    delimiter: u8,
    out: Vec<u8>,
    out_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    offset: u64,
    next_row: u64,
    /// A refused row being skipped to its line's end.
    skipping: Option<RowError>,
    limits: Limits,
}

fn reader(delimiter: u8) -> Reader {
    let mut reader = ReaderBuilder::new().delimiter(delimiter).build();
    // csv_core drops a BOM at the very start of its input. The header stage has already taken
    // the file's BOM, and a parser also starts mid-file (a resumed upload), so a row beginning
    // with U+FEFF must keep it: one read into an empty buffer consumes nothing and marks the
    // reader as started.
    let _ = reader.read_record(b";", &mut [], &mut [0]);
    reader
}

impl RowParser {
    /// A parser for the bytes from `offset` on, the first row there being number `first_row`.
    pub fn new(delimiter: u8, limits: Limits, offset: u64, first_row: u64) -> Self {
        RowParser {
            reader: reader(delimiter),
            delimiter,
            out: vec![0; limits.max_row_bytes + 1],
            out_len: 0,
            ends: vec![0; MAX_CELLS],
            ends_len: 0,
            offset,
            next_row: first_row,
            skipping: None,
            limits,
        }
    }

    /// The offset of the next byte to feed.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The number the next row will have.
    pub fn next_row(&self) -> u64 {
        self.next_row
    }

    /// Reads `input`, appending every row it completes to `rows`.
    pub fn feed(&mut self, mut input: &[u8], rows: &mut Vec<RawRow>) {
        while !input.is_empty() {
            if self.skipping.is_some() {
                match input.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        input = &input[i + 1..];
                        self.offset += i as u64 + 1;
                        self.end_skip(rows);
                    }
                    None => {
                        self.offset += input.len() as u64;
                        return;
                    }
                }
                continue;
            }
            let (result, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            self.offset += nin as u64;
            self.out_len += nout;
            self.ends_len += nend;
            match result {
                ReadRecordResult::InputEmpty | ReadRecordResult::End => {}
                ReadRecordResult::Record => self.emit(rows),
                ReadRecordResult::OutputFull => self.skip(
                    "csv.row_too_long",
                    format!("a row may hold at most {} bytes", self.limits.max_row_bytes),
                ),
                ReadRecordResult::OutputEndsFull => self.skip(
                    "csv.too_many_columns",
                    format!("a row may hold at most {MAX_CELLS} cells"),
                ),
            }
        }
    }

    /// The end of the file: completes the last row if it has no line end.
    pub fn finish(&mut self, rows: &mut Vec<RawRow>) {
        if self.skipping.is_some() {
            self.end_skip(rows);
            return;
        }
        loop {
            let (result, _, _, nend) = self.reader.read_record(
                &[],
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            self.ends_len += nend;
            match result {
                ReadRecordResult::Record => self.emit(rows),
                ReadRecordResult::OutputEndsFull => {
                    self.skip(
                        "csv.too_many_columns",
                        format!("a row may hold at most {MAX_CELLS} cells"),
                    );
                    self.end_skip(rows);
                    return;
                }
                _ => return,
            }
        }
    }

    fn skip(&mut self, rule: &'static str, message: String) {
        self.skipping = Some(RowError {
            row: self.next_row,
            column: String::new(),
            rule,
            message,
        });
        self.next_row += 1;
    }

    fn end_skip(&mut self, rows: &mut Vec<RawRow>) {
        if let Some(error) = self.skipping.take() {
            rows.push(RawRow {
                row: error.row,
                end: self.offset,
                cells: Err(error),
            });
        }
        self.reader = reader(self.delimiter);
        self.out_len = 0;
        self.ends_len = 0;
    }

    fn emit(&mut self, rows: &mut Vec<RawRow>) {
        let ends = &self.ends[..self.ends_len];
        let blank = ends.len() == 1 && ends[0] == 0;
        if !blank {
            let row = self.next_row;
            self.next_row += 1;
            let cells = if self.out_len > self.limits.max_row_bytes {
                Err(RowError {
                    row,
                    column: String::new(),
                    rule: "csv.row_too_long",
                    message: format!("a row may hold at most {} bytes", self.limits.max_row_bytes),
                })
            } else {
                let mut start = 0;
                Ok(ends
                    .iter()
                    .map(|&end| {
                        let cell = self.out[start..end].to_vec();
                        start = end;
                        cell
                    })
                    .collect())
            };
            rows.push(RawRow {
                row,
                end: self.offset,
                cells,
            });
        }
        self.out_len = 0;
        self.ends_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_row_bytes: 40,
            max_field_chars: 20,
        }
    }

    fn parse_in_chunks(data: &[u8], chunk: usize) -> Vec<RawRow> {
        let mut p = RowParser::new(b';', limits(), 0, 2);
        let mut rows = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            p.feed(c, &mut rows);
        }
        p.finish(&mut rows);
        rows
    }

    fn cells(r: &RawRow) -> Vec<String> {
        r.cells
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| String::from_utf8(c.clone()).unwrap())
            .collect()
    }

    #[test]
    fn rows_numbers_and_offsets() {
        let data = b"a;b\r\n\"x;y\";\"say \"\"hi\"\"\"\n\nlast;row";
        for chunk in [1, 2, 3, 7, 100] {
            let rows = parse_in_chunks(data, chunk);
            assert_eq!(rows.len(), 3, "chunk {chunk}");
            assert_eq!(cells(&rows[0]), ["a", "b"]);
            // A record ends at its CR; the LF after it reads as a blank line, so resuming there
            // is the same as going on.
            assert_eq!((rows[0].row, rows[0].end), (2, 4));
            assert_eq!(cells(&rows[1]), ["x;y", "say \"hi\""]);
            assert_eq!(rows[1].row, 3);
            // The blank line is neither a row nor counted.
            assert_eq!(cells(&rows[2]), ["last", "row"]);
            assert_eq!((rows[2].row, rows[2].end), (4, data.len() as u64));
        }
    }

    #[test]
    fn an_overlong_row_is_refused_and_reading_goes_on() {
        let long = "z".repeat(60);
        let data = format!("a;b\n\"{long}\n{long};c\nok;fine\n");
        let rows = parse_in_chunks(data.as_bytes(), 5);
        assert_eq!(rows.len(), 4);
        assert_eq!(cells(&rows[0]), ["a", "b"]);
        assert_eq!(rows[1].cells.as_ref().unwrap_err().rule, "csv.row_too_long");
        // The unbalanced quote only costs its own line: reading resumes at the next line feed.
        assert_eq!(rows[2].cells.as_ref().unwrap_err().rule, "csv.row_too_long");
        assert_eq!(cells(&rows[3]), ["ok", "fine"]);
        assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), [2, 3, 4, 5]);
    }

    #[test]
    fn too_many_cells() {
        let data = format!("{}\nok\n", ";".repeat(MAX_CELLS + 3));
        let rows = parse_in_chunks(data.as_bytes(), 4);
        assert_eq!(
            rows[0].cells.as_ref().unwrap_err().rule,
            "csv.too_many_columns"
        );
        assert_eq!(cells(&rows[1]), ["ok"]);
    }

    #[test]
    fn headers() {
        let mut h = HeaderReader::new(None, limits());
        assert_eq!(h.push(b"\xEF\xBB", false), Ok(None));
        let (header, rest) = h.push(b"\xBFnir,phone\r\n1,2\n", true).unwrap().unwrap();
        assert_eq!(header.cells, ["nir", "phone"]);
        assert_eq!(header.delimiter, b',');
        assert_eq!(header.encoding, Encoding::Utf8);
        assert_eq!(header.end, 3 + 11);
        assert_eq!(rest, b"1,2\n");

        let mut h = HeaderReader::new(None, limits());
        let (header, _) = h.push(b"nom;pr\xE9nom\nx;\xE9\n", true).unwrap().unwrap();
        assert_eq!(header.encoding, Encoding::Windows1252);
        assert_eq!(header.cells, ["nom", "prénom"]);

        let mut h = HeaderReader::new(None, limits());
        // Not enough seen yet to tell the encoding.
        assert_eq!(h.push(b"nir;phone\n", false), Ok(None));

        for (bytes, err) in [
            (&b""[..], FileError::NoHeader),
            (&b"\n\n"[..], FileError::NoHeader),
            (&b"n\0i\0r\0\n\0"[..], FileError::Binary),
        ] {
            assert_eq!(
                HeaderReader::new(None, limits()).push(bytes, true),
                Err(err)
            );
        }
        let long = "a;".repeat(30);
        assert_eq!(
            HeaderReader::new(None, limits()).push(long.as_bytes(), false),
            Err(FileError::HeaderTooLong(40))
        );
        assert_eq!(
            HeaderReader::new(Some(Encoding::Utf8), limits()).push(b"pr\xE9nom\n", false),
            Err(FileError::HeaderEncoding("utf-8"))
        );
    }
}
