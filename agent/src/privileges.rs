//! Checking, before loading anything, that this process and kernel can run the capture, so
//! that the user gets one clear sentence instead of an errno from deep inside the loader.
use thiserror::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrivilegeError {
    #[error("tokentap needs root or the capabilities {missing} (it loads eBPF programs and attaches uprobes); run it as root or grant them, e.g. `setcap cap_bpf,cap_perfmon,cap_sys_admin+ep tokentap`")]
    Capabilities { missing: String },
    #[error("the kernel has no BTF ({0} is missing): tokentap needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf(&'static str),
    #[error("the kernel has no uprobe support ({0} is missing): tokentap needs CONFIG_UPROBE_EVENTS=y")]
    NoUprobes(&'static str),
    #[error("tracefs is not available at /sys/kernel/tracing and could not be mounted: {0}")]
    NoTracefs(String),
}

/// Which of the needed capabilities a `CapEff` hex mask lacks.
pub fn missing_capabilities(cap_eff_hex: &str) -> Vec<&'static str> {
    let mask = u64::from_str_radix(cap_eff_hex.trim(), 16).unwrap_or(0);
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
        .into_iter()
        .filter(|(bit, _)| mask & (1u64 << bit) == 0)
        .map(|(_, name)| name)
        .collect()
}

fn cap_eff() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .unwrap_or_default()
}

pub fn check() -> Result<(), PrivilegeError> {
    let missing = missing_capabilities(&cap_eff());
    if !missing.is_empty() {
        return Err(PrivilegeError::Capabilities { missing: missing.join(", ") });
    }
    const BTF: &str = "/sys/kernel/btf/vmlinux";
    if !std::path::Path::new(BTF).exists() {
        return Err(PrivilegeError::NoBtf(BTF));
    }
    const UPROBE: &str = "/sys/bus/event_source/devices/uprobe";
    if !std::path::Path::new(UPROBE).exists() {
        return Err(PrivilegeError::NoUprobes(UPROBE));
    }
    ensure_tracefs()
}

/// Tracepoints are attached by their tracefs id; some hosts boot without tracefs mounted.
fn ensure_tracefs() -> Result<(), PrivilegeError> {
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    if events.exists() || std::path::Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; mounting tracefs has no other effect.
    let rc = unsafe { libc::mount(c"tracefs".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(PrivilegeError::NoTracefs(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert!(missing_capabilities("000001ffffffffff").is_empty());
    }

    #[test]
    fn unprivileged_lacks_all_three() {
        assert_eq!(missing_capabilities("0000000000000000"), vec!["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]);
        assert_eq!(missing_capabilities(&format!("{:x}", 1u64 << 21)), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities("garbage").len(), 3);
    }
}
