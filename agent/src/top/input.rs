//! Keys and what they do to the view's state. Keyboard only: `top` is used over SSH.
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::rates::{Sort, SortCol, View};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    View(View),
    NextView,
    PrevView,
    Sort(SortCol),
    Reverse,
    Up,
    Down,
    PageUp,
    PageDown,
    First,
    Last,
    Ignore,
}

/// The keys, as the footer shows them (long form, then the form for narrow terminals).
pub const HELP: &str = "q quit  tab/t/m/p view  sort: n name c calls i in o out $ cost e err r reverse  ↑↓ scroll";
pub const HELP_SHORT: &str = "q quit  tab t m p view  n c i o $ e sort  r rev";

pub fn action(key: &KeyEvent) -> Action {
    // Raw mode turns Ctrl-C into a key, not a signal.
    if key.kind == KeyEventKind::Release {
        return Action::Ignore;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') | KeyCode::Char('d') => Action::Quit,
            _ => Action::Ignore,
        };
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Action::Quit,
        KeyCode::Tab | KeyCode::Right => Action::NextView,
        KeyCode::BackTab | KeyCode::Left => Action::PrevView,
        KeyCode::Char('t') => Action::View(View::Team),
        KeyCode::Char('m') => Action::View(View::Model),
        KeyCode::Char('p') => Action::View(View::Process),
        KeyCode::Char('n') => Action::Sort(SortCol::Name),
        KeyCode::Char('c') => Action::Sort(SortCol::Calls),
        KeyCode::Char('i') => Action::Sort(SortCol::Input),
        KeyCode::Char('o') => Action::Sort(SortCol::Output),
        KeyCode::Char('$') => Action::Sort(SortCol::Cost),
        KeyCode::Char('e') => Action::Sort(SortCol::Errors),
        KeyCode::Char('r') => Action::Reverse,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown | KeyCode::Char(' ') => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::First,
        KeyCode::End | KeyCode::Char('G') => Action::Last,
        _ => Action::Ignore,
    }
}

/// What the user chose: the view, its order, and the first row shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    pub view: View,
    pub sort: Sort,
    pub offset: usize,
}

impl State {
    /// Applies an action; `false` when it is time to quit. `rows`: rows in the table,
    /// `page`: rows that fit on screen (for scrolling).
    pub fn apply(&mut self, a: Action, rows: usize, page: usize) -> bool {
        let last = rows.saturating_sub(page.max(1));
        match a {
            Action::Quit => return false,
            Action::View(v) => self.switch(v),
            Action::NextView => self.switch(self.view.next()),
            Action::PrevView => self.switch(self.view.prev()),
            Action::Sort(c) => self.sort = self.sort.choose(c),
            Action::Reverse => self.sort.descending = !self.sort.descending,
            Action::Up => self.offset = self.offset.saturating_sub(1),
            Action::Down => self.offset = (self.offset + 1).min(last),
            Action::PageUp => self.offset = self.offset.saturating_sub(page.max(1)),
            Action::PageDown => self.offset = (self.offset + page.max(1)).min(last),
            Action::First => self.offset = 0,
            Action::Last => self.offset = last,
            Action::Ignore => {}
        }
        true
    }

    fn switch(&mut self, v: View) {
        if v != self.view {
            self.view = v;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn press(s: &mut State, code: KeyCode) -> bool {
        s.apply(action(&key(code)), 50, 10)
    }

    #[test]
    fn quit_keys() {
        assert_eq!(action(&key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(action(&key(KeyCode::Esc)), Action::Quit);
        assert_eq!(action(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
        assert!(!State::default().apply(Action::Quit, 0, 0));
    }

    #[test]
    fn views_switch_by_letter_and_tab() {
        let mut s = State::default();
        assert_eq!(s.view, View::Team);
        press(&mut s, KeyCode::Char('p'));
        assert_eq!(s.view, View::Process);
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.view, View::Team);
        press(&mut s, KeyCode::BackTab);
        assert_eq!(s.view, View::Process);
        press(&mut s, KeyCode::Char('m'));
        assert_eq!(s.view, View::Model);
    }

    #[test]
    fn sort_keys_choose_then_reverse() {
        let mut s = State::default();
        assert_eq!(s.sort, Sort { col: SortCol::Cost, descending: true });
        press(&mut s, KeyCode::Char('c'));
        assert_eq!(s.sort, Sort { col: SortCol::Calls, descending: true });
        press(&mut s, KeyCode::Char('c'));
        assert_eq!(s.sort, Sort { col: SortCol::Calls, descending: false });
        press(&mut s, KeyCode::Char('n'));
        assert_eq!(s.sort, Sort { col: SortCol::Name, descending: false });
        press(&mut s, KeyCode::Char('r'));
        assert_eq!(s.sort, Sort { col: SortCol::Name, descending: true });
    }

    #[test]
    fn scrolling_stays_within_the_rows_and_resets_on_a_new_view() {
        let mut s = State::default();
        press(&mut s, KeyCode::Up);
        assert_eq!(s.offset, 0);
        press(&mut s, KeyCode::PageDown);
        press(&mut s, KeyCode::Down);
        assert_eq!(s.offset, 11);
        press(&mut s, KeyCode::End);
        assert_eq!(s.offset, 40);
        press(&mut s, KeyCode::Down);
        assert_eq!(s.offset, 40);
        press(&mut s, KeyCode::Char('m'));
        assert_eq!(s.offset, 0);
        assert!(s.apply(Action::Down, 3, 10), "fewer rows than a page: no scrolling");
        assert_eq!(s.offset, 0);
    }
}
