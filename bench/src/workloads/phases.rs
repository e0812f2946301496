//! Workloads timed in phases (`array_fill_sum`: create, fill, sum; `shared_memory`: create,
//! attach, close, unlink): one run of a side yields every phase's figure, and each phase is a
//! row of its own. The group's first row runs the side and keeps the figures; the group's
//! other rows, which come right after it in the same round, read them instead of running the
//! side again. A row selected without the first (`--only array_fill_sum/fill`) runs the side
//! itself. The CPython side does the same through [`PySide::field`](super::PySide): rows with
//! the same script arguments share one run per round.

use super::Measure;
use std::cell::RefCell;
use std::rc::Rc;

/// Every phase's figure from one run of a side, or why it failed.
type Figures = Result<Vec<f64>, String>;

/// `count` measures, one per phase, over one `run` that returns every phase's figure (in
/// phase order) for one round.
pub fn split(count: usize, run: impl FnMut() -> Figures + 'static) -> Vec<Measure> {
    let run = Rc::new(RefCell::new(run));
    let last: Rc<RefCell<Option<Figures>>> = Rc::new(RefCell::new(None));
    let pick = move |figures: &Figures, i: usize| -> Result<f64, String> {
        match figures {
            Ok(v) => v.get(i).copied().ok_or_else(|| format!("phase {i} missing")),
            Err(e) => Err(e.clone()),
        }
    };
    (0..count)
        .map(|i| {
            let (run, last) = (run.clone(), last.clone());
            let m: Measure = if i == 0 {
                Box::new(move || {
                    let figures = (run.borrow_mut())();
                    let r = pick(&figures, 0);
                    *last.borrow_mut() = Some(figures);
                    r
                })
            } else {
                Box::new(move || match &*last.borrow() {
                    Some(figures) => pick(figures, i),
                    None => pick(&(run.borrow_mut())(), i),
                })
            };
            m
        })
        .collect()
}
