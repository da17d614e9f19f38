//! Process owner: uid from /proc/PID/status, user name from /etc/passwd.
