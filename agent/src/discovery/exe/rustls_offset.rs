//! How far into a rustls `ConnectionCommon` its `Reader` points, read off the machine code that
//! builds a `Reader` and calls `Reader::read` (x86-64). Pure: tested from byte fixtures.
//!
//! `ConnectionCommon::reader()` is inlined into its callers; at each call site of
//! `<Reader as Read>::read` the code looks like
//!
//! ```text
//! mov  r15, [rdi]            ; the &mut ConnectionCommon
//! add  r15, 0x50             ; &mut .core.common_state.received_plaintext
//! mov  [rsp+8], r15          ; Reader { received_plaintext, .. } on the stack
//! lea  rdi, [rsp+8]          ; &mut Reader
//! call <Reader as Read>::read
//! ```
//!
//! so the offset is what was added to the pointer stored in the Reader's first word. The layout
//! is fixed per build, so one executable has one offset.
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// How a call to a function taking a `&Reader` shows up in code.
#[derive(Debug, Clone)]
pub struct CallTarget {
    /// Address of the function (`<Reader as Read>::read`, `Reader::into_first_chunk`, ...).
    pub function: u64,
    /// Addresses of GOT slots holding it (PIE code calls through `call [rip+slot]`).
    pub slots: Vec<u64>,
    /// The register that carries the `&Reader`: RDI, or RSI behind a return slot.
    pub reader_reg: Register,
}

/// How many instructions before a call are searched for the Reader's construction.
const WINDOW: usize = 40;

/// The offset found at each call of `target` in `code` (one function's bytes at `address`);
/// `None` for a call whose Reader construction is not recognised.
pub fn reader_offsets(code: &[u8], address: u64, target: &CallTarget) -> Vec<Option<u64>> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut seen: Vec<Instruction> = Vec::new();
    let mut out = Vec::new();
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.code() == Code::INVALID {
            break;
        }
        if is_call_to(&instr, target) {
            let from = seen.len().saturating_sub(WINDOW);
            out.push(offset_before_call(&seen[from..], target.reader_reg));
        }
        seen.push(instr);
    }
    out
}

fn is_call_to(instr: &Instruction, target: &CallTarget) -> bool {
    if instr.mnemonic() != Mnemonic::Call {
        return false;
    }
    match instr.op0_kind() {
        OpKind::NearBranch64 => instr.near_branch64() == target.function,
        OpKind::Memory if instr.is_ip_rel_memory_operand() => target.slots.contains(&instr.ip_rel_memory_address()),
        _ => false,
    }
}

/// `before` ends right before the call; `reader_reg` carries the `&Reader`.
fn offset_before_call(before: &[Instruction], reader_reg: Register) -> Option<u64> {
    // 1. `lea rdi, [rsp/rbp + slot]`: where the Reader lives.
    let lea = before.iter().rposition(|i| writes(i, reader_reg))?;
    let (base, slot) = stack_slot_address(&before[lea])?;
    stored_offset(before, base, slot)
}

/// The offset in a `ConnectionCommon<_>::reader` that was not inlined (debug builds): it
/// writes the Reader through its return slot (RDI), the first word from the `&self` (RSI).
pub fn offset_in_reader_fn(code: &[u8], address: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut seen: Vec<Instruction> = Vec::new();
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.code() == Code::INVALID || instr.mnemonic() == Mnemonic::Ret {
            return None;
        }
        seen.push(instr);
        if is_store_to(&instr, Register::RDI, 0) {
            return stored_offset(&seen, Register::RDI, 0);
        }
    }
    None
}

fn is_store_to(i: &Instruction, base: Register, disp: u64) -> bool {
    i.mnemonic() == Mnemonic::Mov
        && i.op0_kind() == OpKind::Memory
        && i.memory_base() == base
        && i.memory_index() == Register::None
        && i.memory_displacement64() == disp
        && i.op1_kind() == OpKind::Register
        && GPRS.iter().any(|(r64, _)| *r64 == i.op1_register())
}

/// What was added to the pointer last stored (64-bit) at `[base + disp]` in `before`.
fn stored_offset(before: &[Instruction], base: Register, disp: u64) -> Option<u64> {
    // 2. The last 64-bit store of a register into that slot: the Reader's first word.
    let store = before.iter().rposition(|i| is_store_to(i, base, disp))?;
    let reg = before[store].op1_register();
    // 3. How that register got its value.
    let def = before[..store].iter().rposition(|i| writes(i, reg))?;
    let def = &before[def];
    match (def.mnemonic(), def.op1_kind()) {
        (Mnemonic::Lea, OpKind::Memory)
            if def.memory_base() != Register::RIP
                && def.memory_base() != Register::None
                && def.memory_index() == Register::None =>
        {
            Some(def.memory_displacement64()).filter(|d| (*d as i64) >= 0)
        }
        (Mnemonic::Add, OpKind::Immediate8to64 | OpKind::Immediate32to64) => {
            Some(def.immediate64()).filter(|d| (*d as i64) >= 0)
        }
        // The field is the object's first: the pointer is stored as loaded.
        (Mnemonic::Mov, OpKind::Register | OpKind::Memory) => Some(0),
        _ => None,
    }
}

/// `(base, displacement)` of a `lea reg, [rsp/rbp + disp]` or a `mov reg, rsp`.
fn stack_slot_address(instr: &Instruction) -> Option<(Register, u64)> {
    if instr.mnemonic() == Mnemonic::Mov
        && instr.op1_kind() == OpKind::Register
        && instr.op1_register() == Register::RSP
    {
        return Some((Register::RSP, 0));
    }
    (instr.mnemonic() == Mnemonic::Lea
        && instr.op1_kind() == OpKind::Memory
        && matches!(instr.memory_base(), Register::RSP | Register::RBP)
        && instr.memory_index() == Register::None)
        .then(|| (instr.memory_base(), instr.memory_displacement64()))
}

/// True if `instr` (probably) writes the 64-bit register `reg`: its first operand is `reg` or
/// one of its parts, and it is not a comparison. Calls clobber the argument registers.
fn writes(instr: &Instruction, reg: Register) -> bool {
    if instr.mnemonic() == Mnemonic::Call {
        return matches!(
            reg,
            Register::RDI
                | Register::RSI
                | Register::RDX
                | Register::RCX
                | Register::R8
                | Register::R9
                | Register::RAX
                | Register::R10
                | Register::R11
        );
    }
    instr.op_count() > 0
        && instr.op0_kind() == OpKind::Register
        && full_register(instr.op0_register()) == reg
        && !matches!(instr.mnemonic(), Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Push | Mnemonic::Bt)
}

/// The 64-bit general-purpose registers and their 32-bit halves (writing the half zeroes the
/// upper bits, so it defines the whole register).
const GPRS: [(Register, Register); 16] = [
    (Register::RAX, Register::EAX),
    (Register::RCX, Register::ECX),
    (Register::RDX, Register::EDX),
    (Register::RBX, Register::EBX),
    (Register::RSP, Register::ESP),
    (Register::RBP, Register::EBP),
    (Register::RSI, Register::ESI),
    (Register::RDI, Register::EDI),
    (Register::R8, Register::R8D),
    (Register::R9, Register::R9D),
    (Register::R10, Register::R10D),
    (Register::R11, Register::R11D),
    (Register::R12, Register::R12D),
    (Register::R13, Register::R13D),
    (Register::R14, Register::R14D),
    (Register::R15, Register::R15D),
];

fn full_register(reg: Register) -> Register {
    GPRS.iter().find(|(_, r32)| *r32 == reg).map_or(reg, |(r64, _)| *r64)
}

/// The value most call sites agree on (ties: the smallest, as an enclosing object can only add
/// to the offset), or `None` when no call site was recognised.
pub fn consensus(offsets: &[Option<u64>]) -> Option<u64> {
    let mut counts: Vec<(u64, usize)> = Vec::new();
    for d in offsets.iter().flatten() {
        match counts.iter_mut().find(|(v, _)| v == d) {
            Some((_, n)) => *n += 1,
            None => counts.push((*d, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts.first().map(|(d, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// `<rustls::stream::Stream<C,T> as std::io::Read>::read` from a ureq 2.12 / rustls 0.23.46
    /// release build (PIE): `add r15, 0x50; mov [rsp+8], r15; lea rdi, [rsp+8];
    /// call [rip+0x1695ec]` (the GOT slot at 0x265630 holds `Reader::read`).
    const STREAM_READ: &str = "4157415641554154534883ec204889d34989f64c8b3f49837f78007429410fb7873b0300004983c7504c89\
                               7c24086689442410488d7c24084c89f64889daff15ec951600eb5a";

    #[test]
    fn finds_the_offset_through_a_got_slot() {
        let code = hex(STREAM_READ);
        let target = CallTarget { function: 0x165bc0, slots: vec![0x265630], reader_reg: Register::RDI };
        assert_eq!(reader_offsets(&code, 0xfc000, &target), vec![Some(0x50)]);
        // Another slot: no call site.
        let other = CallTarget { function: 0x165bc0, slots: vec![0x265648], reader_reg: Register::RDI };
        assert!(reader_offsets(&code, 0xfc000, &other).is_empty());
    }

    #[test]
    fn direct_calls_and_lea_forms() {
        // mov rax, [rdi]; lea rcx, [rax+0x120]; mov [rsp+0x10], rcx; lea rdi, [rsp+0x10];
        // call rel32 (to 0x1000 + 22 + 0x100)
        let code = hex("488b07488d882001000048894c2410488d7c2410e800010000");
        let target =
            CallTarget { function: 0x1000 + code.len() as u64 + 0x100, slots: vec![], reader_reg: Register::RDI };
        assert_eq!(reader_offsets(&code, 0x1000, &target), vec![Some(0x120)]);
        // mov rcx, [rdi]; mov [rsp+0x10], rcx; lea rdi, [rsp+0x10]; call: offset 0.
        let code = hex("488b0f48894c2410488d7c2410e800010000");
        let target =
            CallTarget { function: 0x1000 + code.len() as u64 + 0x100, slots: vec![], reader_reg: Register::RDI };
        assert_eq!(reader_offsets(&code, 0x1000, &target), vec![Some(0)]);
    }

    #[test]
    fn unrecognised_construction_is_none() {
        // mov rdi, rbx; call rel32: no Reader on the stack.
        let code = hex("4889dfe800010000");
        let target =
            CallTarget { function: 0x1000 + code.len() as u64 + 0x100, slots: vec![], reader_reg: Register::RDI };
        assert_eq!(reader_offsets(&code, 0x1000, &target), vec![None]);
        // Garbage never panics.
        assert!(reader_offsets(&[0xff; 64], 0x1000, &target).len() <= 64);
    }

    #[test]
    fn consensus_prefers_the_majority_then_the_smallest() {
        assert_eq!(consensus(&[Some(0x50), None, Some(0x58), Some(0x50)]), Some(0x50));
        assert_eq!(consensus(&[Some(0x58), Some(0x50)]), Some(0x50));
        assert_eq!(consensus(&[None]), None);
        assert_eq!(consensus(&[]), None);
    }

    /// `rustls::conn::ConnectionCommon<Data>::reader` from a debug build of the same client:
    /// `mov rcx, rsi; ...; mov rsi, rcx; add rsi, 0x50; ...; mov [rdi], rsi`.
    #[test]
    fn reader_function_of_a_debug_build() {
        let code = hex(
            "4889f14889f848894c24f048894c24f84889ce4883c6508a913b0300008a893c03000048893780e20188570880e101884f09c3",
        );
        assert_eq!(offset_in_reader_fn(&code, 0x28edc0), Some(0x50));
        // A function that returns before storing anything.
        assert_eq!(offset_in_reader_fn(&hex("4889f8c3"), 0x1000), None);
        assert_eq!(offset_in_reader_fn(&[], 0x1000), None);
    }
}
