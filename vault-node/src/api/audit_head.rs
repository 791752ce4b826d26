//! The text form of an audit chain head, `SEQ:MAC` (the newest record's sequence number and its
//! MAC in hex), as `vaultctl audit verify` prints it and `--extends` takes it back. Kept off the
//! node, it lets a later `verify` tell whether the log still grows from it (see docs/audit.md).

use tonic::Status;

/// `42:9f…` (64 hex digits).
pub fn format(seq: u64, mac: &[u8; 32]) -> String {
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("{seq}:{hex}")
}

/// Parses what [`format`] wrote; anything else is INVALID_ARGUMENT.
pub fn parse(s: &str) -> Result<(u64, [u8; 32]), Status> {
    let bad = || Status::invalid_argument("an audit head is SEQ:MAC, as `vaultctl audit verify` prints it");
    let (seq, hex) = s.trim().split_once(':').ok_or_else(bad)?;
    let seq = seq.parse::<u64>().map_err(|_| bad())?;
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut mac = [0u8; 32];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok((seq, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_round_trips_and_malformed_ones_are_invalid_arguments() {
        let mac: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let text = format(42, &mac);
        assert_eq!(parse(&text).unwrap(), (42, mac));
        for bad in ["", "42", "x:00", &text[..text.len() - 1], &format!("{text}0"), &text.replace('0', "g")] {
            assert_eq!(parse(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}
