//! Where the JavaScript runtimes and CLIs with a TLS stack of their own are usually installed,
//! so that the agent can probe them at start: a program is otherwise inspected at its first
//! exec after the agent started, and calls it makes before the attach completes (Bun's fetch
//! starts within ~20 ms of exec; the attach takes 50–300 ms) are not seen.
use std::path::{Path, PathBuf};

/// System-wide `bin` directories (npm's global installs link into `/usr/local/bin`).
const SYSTEM_DIRS: &[&str] = &["usr/local/bin", "usr/bin", "bin"];
/// Per-user install directories, under each home: Bun's and Deno's installers, `~/.local/bin`
/// (Claude Code's native build, a Bun single-file executable).
const HOME_DIRS: &[&str] = &[".bun/bin", ".deno/bin", ".local/bin"];
/// Executable names worth probing ahead.
const NAMES: &[&str] = &["node", "nodejs", "bun", "deno", "claude"];

/// Existing candidate files under `root` (`/` on a host): the system directories, every home
/// (`root/root`, `root/home/*`) and every nvm-installed node version.
pub fn candidates(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = SYSTEM_DIRS.iter().map(|d| root.join(d)).collect();
    let mut homes = vec![root.join("root")];
    if let Ok(entries) = std::fs::read_dir(root.join("home")) {
        let mut users: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        users.sort();
        homes.extend(users);
    }
    for home in &homes {
        dirs.extend(HOME_DIRS.iter().map(|d| home.join(d)));
        if let Ok(versions) = std::fs::read_dir(home.join(".nvm/versions/node")) {
            let mut versions: Vec<PathBuf> = versions.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
            versions.sort();
            dirs.extend(versions);
        }
    }
    dirs.iter().flat_map(|d| NAMES.iter().map(move |n| d.join(n))).filter(|p| p.is_file()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_system_user_and_nvm_installs() {
        let root = std::env::temp_dir().join(format!("tokentap-runtimes-{}", std::process::id()));
        let files = [
            "usr/bin/node",
            "usr/local/bin/bun",
            "root/.bun/bin/bun",
            "home/alice/.local/bin/claude",
            "home/bob/.nvm/versions/node/v22.1.0/bin/node",
            "home/bob/.deno/bin/deno",
            // Not a runtime name, or not where runtimes live: left alone.
            "usr/bin/python3",
            "home/alice/src/node",
        ];
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"").unwrap();
        }
        let found: Vec<String> =
            candidates(&root).iter().map(|p| p.strip_prefix(&root).unwrap().display().to_string()).collect();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            found,
            [
                "usr/local/bin/bun",
                "usr/bin/node",
                "root/.bun/bin/bun",
                "home/alice/.local/bin/claude",
                "home/bob/.deno/bin/deno",
                "home/bob/.nvm/versions/node/v22.1.0/bin/node",
            ]
        );
    }
}
