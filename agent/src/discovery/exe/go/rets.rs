//! The return sites of a function, found by decoding its machine code from the entry to its
//! end: Go functions may return from several places, and each `RET` gets a probe (Go cannot
//! take uretprobes: see the eBPF side).
use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic};

/// Offsets (from the function's first byte) of every `RET` in `code`, decoded as x86-64 at
/// `ip`. A linear sweep suits Go: its compiler places no data (jump tables live in rodata)
/// between instructions, only `INT3` padding after the last one.
pub fn ret_offsets(code: &[u8], ip: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut rets = Vec::new();
    while decoder.can_decode() {
        let position = decoder.position();
        let instruction = decoder.decode();
        // Guard: an invalid or zero-length decode must still make progress.
        if instruction.is_invalid() || instruction.len() == 0 {
            if decoder.set_position(position + 1).is_err() {
                break;
            }
            decoder.set_ip(ip + position as u64 + 1);
            continue;
        }
        // ENDBR64 (CET landing pad, emitted by some toolchains) is an ordinary instruction
        // here; it is only named so a reader knows it was considered.
        if instruction.code() == Code::Endbr64 {
            continue;
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            rets.push(instruction.ip() - ip);
        }
    }
    rets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_ret_and_only_rets() {
        // endbr64; test rax,rax; je +1; ret; mov eax,0xc3c3c3c3; ret 8; int3; int3
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xc0, 0x74, 0x01, 0xc3, 0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc2, 0x08, 0x00,
            0xcc, 0xcc,
        ];
        // The 0xc3 bytes inside the mov's immediate are not returns.
        assert_eq!(ret_offsets(&code, 0x40_1000), vec![9, 15]);
    }

    #[test]
    fn garbage_and_truncation_make_progress() {
        assert!(ret_offsets(&[], 0).is_empty());
        // 0x06 is invalid in 64-bit mode; a cut-off instruction at the end too.
        assert_eq!(ret_offsets(&[0x06, 0x06, 0xc3, 0x48], 0), vec![2]);
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let _ = ret_offsets(&noise, 0x1000);
    }
}
