//! A pcapng writer (the blocks `iqd trace` needs): a section header, one interface
//! description per traced NIC (linktype Ethernet, nanosecond timestamps, `if_name`), and
//! enhanced packet blocks with the direction (`epb_flags`) and, for a drop, its reason in the
//! packet's comment. Little-endian, as the host writes it (readers take either).
use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

/// A packet's direction on its interface (`epb_flags` bits 0-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the interface's LPAR.
    Inbound = 1,
    /// Sent by the interface's LPAR.
    Outbound = 2,
}

pub struct Writer<W: Write> {
    out: W,
}

fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl<W: Write> Writer<W> {
    /// Starts a section: writes its header block.
    pub fn new(mut out: W, application: &str) -> io::Result<Self> {
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        // Section length unknown (a stream).
        body.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut body, SHB_USERAPPL, application.as_bytes());
        option(&mut body, OPT_END, &[]);
        block(&mut out, SHB, &body)?;
        Ok(Self { out })
    }

    /// Describes the next interface (ids count from 0 in the order written).
    pub fn interface(&mut self, name: &str, snaplen: u32) -> io::Result<()> {
        let mut body = Vec::new();
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&snaplen.to_le_bytes());
        option(&mut body, IF_NAME, name.as_bytes());
        // Nanoseconds.
        option(&mut body, IF_TSRESOL, &[9]);
        option(&mut body, OPT_END, &[]);
        block(&mut self.out, IDB, &body)
    }

    /// One packet: `data` (the captured bytes) of a frame `orig_len` long, at `unix_ns`.
    pub fn packet(
        &mut self,
        interface: u32,
        unix_ns: u64,
        data: &[u8],
        orig_len: u32,
        direction: Direction,
        comment: Option<&str>,
    ) -> io::Result<()> {
        let mut body = Vec::with_capacity(32 + data.len());
        body.extend_from_slice(&interface.to_le_bytes());
        body.extend_from_slice(&((unix_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(unix_ns as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&orig_len.to_le_bytes());
        body.extend_from_slice(data);
        pad(&mut body);
        option(&mut body, EPB_FLAGS, &(direction as u32).to_le_bytes());
        if let Some(comment) = comment {
            option(&mut body, OPT_COMMENT, comment.as_bytes());
        }
        option(&mut body, OPT_END, &[]);
        block(&mut self.out, EPB, &body)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_padded_and_framed_by_their_length() {
        let mut w = Writer::new(Vec::new(), "iqd").unwrap();
        w.interface("LP01/hsi0", 128).unwrap();
        w.packet(
            0,
            1 << 40,
            &[1, 2, 3],
            60,
            Direction::Outbound,
            Some("drop: x"),
        )
        .unwrap();
        let bytes = w.out;
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < bytes.len() {
            let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            let trailer = u32::from_le_bytes(bytes[at + len - 4..at + len].try_into().unwrap());
            assert_eq!(trailer as usize, len);
            kinds.push(kind);
            at += len;
        }
        assert_eq!(kinds, [SHB, IDB, EPB]);
        assert_eq!(at, bytes.len());
    }
}
