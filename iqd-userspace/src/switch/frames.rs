//! Where every UMEM frame is. The switch's ledger: each frame is in exactly one place at any
//! time, and every move is checked against what the kernel hands back, so a leak or a double
//! use shows up as a violation instead of as slowly vanishing throughput.
//!
//! A frame is `Free` (the switch holds it, unused), in a socket's fill ring (`Fill`: the
//! kernel may write a received frame into it), `Held` (received, the switch is deciding), or
//! in a socket's TX ring (`Tx`: the kernel sends it, then returns it on that socket's
//! completion ring).
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Free,
    Fill(u16),
    Held,
    Tx(u16),
}

/// How many frames are where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub frames: u32,
    pub free: u32,
    /// In fill rings, or taken from them by the kernel and not yet received.
    pub fill: u32,
    /// Received, not yet sent on or dropped.
    pub held: u32,
    /// In TX rings, or sent and not yet completed.
    pub tx: u32,
}

pub struct Ledger {
    place: Vec<Place>,
    /// Free frames, each exactly once.
    free: Vec<u32>,
    counts: Counts,
    /// Moves that contradicted the ledger (the kernel returned a frame it did not have, or a
    /// frame on the wrong socket). Always zero unless something is badly wrong.
    violations: u64,
}

impl Ledger {
    pub fn new(frames: u32) -> Self {
        Self {
            place: vec![Place::Free; frames as usize],
            // Popped from the end: low frames go out first.
            free: (0..frames).rev().collect(),
            counts: Counts {
                frames,
                free: frames,
                ..Counts::default()
            },
            violations: 0,
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn violations(&self) -> u64 {
        self.violations
    }

    pub fn free_frames(&self) -> u32 {
        self.counts.free
    }

    fn at(&self, frame: u32) -> Option<Place> {
        self.place.get(frame as usize).copied()
    }

    fn set(&mut self, frame: u32, to: Place) {
        let from = self.place[frame as usize];
        *self.count_mut(from) -= 1;
        *self.count_mut(to) += 1;
        self.place[frame as usize] = to;
    }

    fn count_mut(&mut self, place: Place) -> &mut u32 {
        match place {
            Place::Free => &mut self.counts.free,
            Place::Fill(_) => &mut self.counts.fill,
            Place::Held => &mut self.counts.held,
            Place::Tx(_) => &mut self.counts.tx,
        }
    }

    /// A free frame for socket `socket`'s fill ring.
    pub fn to_fill(&mut self, socket: u16) -> Option<u32> {
        let frame = self.free.pop()?;
        self.set(frame, Place::Fill(socket));
        Some(frame)
    }

    /// The kernel received a frame (or part of one) into `frame` on socket `socket`.
    pub fn received(&mut self, frame: u32, socket: u16) -> bool {
        self.expect(frame, Place::Fill(socket), Place::Held)
    }

    /// A held frame goes into socket `socket`'s TX ring.
    pub fn to_tx(&mut self, frame: u32, socket: u16) -> bool {
        self.expect(frame, Place::Held, Place::Tx(socket))
    }

    /// A held frame is dropped: it is free again.
    pub fn drop_held(&mut self, frame: u32) -> bool {
        if self.expect(frame, Place::Held, Place::Free) {
            self.free.push(frame);
            return true;
        }
        false
    }

    /// The kernel completed sending `frame` from socket `socket`: it is free again.
    pub fn completed(&mut self, frame: u32, socket: u16) -> bool {
        if self.expect(frame, Place::Tx(socket), Place::Free) {
            self.free.push(frame);
            return true;
        }
        false
    }

    /// The kernel handed back an address outside the UMEM.
    pub fn violation(&mut self) {
        self.violations += 1;
    }

    fn expect(&mut self, frame: u32, from: Place, to: Place) -> bool {
        if self.at(frame) != Some(from) {
            self.violations += 1;
            return false;
        }
        self.set(frame, to);
        true
    }

    /// Recounts every frame from scratch and checks the running counts and the free list
    /// against it: each frame in exactly one place, each free frame listed exactly once.
    pub fn audit(&self) -> Result<(), String> {
        let mut recount = Counts {
            frames: self.place.len() as u32,
            ..Counts::default()
        };
        for place in &self.place {
            match place {
                Place::Free => recount.free += 1,
                Place::Fill(_) => recount.fill += 1,
                Place::Held => recount.held += 1,
                Place::Tx(_) => recount.tx += 1,
            }
        }
        if recount != self.counts {
            return Err(format!(
                "running counts {:?} differ from a recount {recount:?}",
                self.counts
            ));
        }
        let mut listed = vec![false; self.place.len()];
        for &frame in &self.free {
            let seen = listed
                .get_mut(frame as usize)
                .ok_or_else(|| format!("free list holds frame {frame}, past the UMEM"))?;
            if *seen {
                return Err(format!("frame {frame} is on the free list twice"));
            }
            *seen = true;
            if self.place[frame as usize] != Place::Free {
                return Err(format!("frame {frame} is on the free list but not free"));
            }
        }
        if self.free.len() as u32 != recount.free {
            return Err(format!(
                "{} frames are free but {} listed",
                recount.free,
                self.free.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_goes_round_and_comes_back_free() {
        let mut ledger = Ledger::new(4);
        let frame = ledger.to_fill(1).unwrap();
        assert_eq!(ledger.counts().fill, 1);
        assert!(ledger.received(frame, 1));
        assert!(ledger.to_tx(frame, 2));
        assert_eq!(ledger.counts().tx, 1);
        assert!(ledger.completed(frame, 2));
        assert_eq!(ledger.counts().free, 4);
        assert_eq!(ledger.violations(), 0);
        ledger.audit().unwrap();
    }

    #[test]
    fn dropped_frames_are_free_again() {
        let mut ledger = Ledger::new(2);
        let frame = ledger.to_fill(0).unwrap();
        assert!(ledger.received(frame, 0));
        assert!(ledger.drop_held(frame));
        assert_eq!(ledger.free_frames(), 2);
        ledger.audit().unwrap();
    }

    #[test]
    fn moves_the_kernel_could_not_have_made_are_violations() {
        let mut ledger = Ledger::new(3);
        let frame = ledger.to_fill(0).unwrap();
        // Received on another socket than the one whose fill ring had it.
        assert!(!ledger.received(frame, 1));
        // Completed without having been sent.
        assert!(!ledger.completed(frame, 0));
        // Beyond the UMEM.
        assert!(!ledger.received(99, 0));
        assert_eq!(ledger.violations(), 3);
        // The frame stayed where it was.
        assert!(ledger.received(frame, 0));
        assert!(ledger.to_tx(frame, 0));
        assert!(!ledger.completed(frame, 1));
        assert!(ledger.completed(frame, 0));
        assert!(!ledger.completed(frame, 0), "completed twice");
        assert_eq!(ledger.violations(), 5);
        ledger.audit().unwrap();
    }

    #[test]
    fn the_fill_rings_cannot_take_more_than_there_is() {
        let mut ledger = Ledger::new(2);
        assert!(ledger.to_fill(0).is_some());
        assert!(ledger.to_fill(1).is_some());
        assert!(ledger.to_fill(0).is_none());
        assert_eq!(ledger.counts().fill, 2);
        ledger.audit().unwrap();
    }
}
