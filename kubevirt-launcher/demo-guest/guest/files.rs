//! A small file store in RAM, for files copied in and out with `scp`: a few named files of
//! bounded size, gone at the next boot. Names are flat (a path is kept as given, without a
//! directory tree); `ls` and `cat NAME` on the console show them.

/// How many files the store keeps.
pub const MAX_FILES: usize = 4;
/// The largest file.
pub const MAX_SIZE: usize = 256 * 1024;
/// The longest name.
pub const MAX_NAME: usize = 64;

/// One file.
pub struct File {
    name: [u8; MAX_NAME],
    name_len: usize,
    len: usize,
    data: [u8; MAX_SIZE],
}

impl File {
    /// Its name.
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    /// Its contents.
    pub fn data(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// The store.
pub struct Store {
    files: [File; MAX_FILES],
}

static mut STORE: Store = Store {
    files: [const {
        File {
            name: [0; MAX_NAME],
            name_len: 0,
            len: 0,
            data: [0; MAX_SIZE],
        }
    }; MAX_FILES],
};

/// The store (in `.bss`: a static, not on the stack).
pub fn store() -> &'static mut Store {
    // SAFETY: the guest runs one thread and no interrupt handler touches the store; callers
    // use the reference for one operation and never keep two at once.
    unsafe { &mut *&raw mut STORE }
}

/// Why a file cannot be written.
#[derive(Clone, Copy)]
pub enum Refused {
    /// Longer than [`MAX_SIZE`].
    TooLarge,
    /// Every slot holds another file.
    Full,
    /// An empty or too long name.
    BadName,
}

impl Refused {
    /// The message `scp` shows.
    pub fn message(self) -> &'static str {
        match self {
            Refused::TooLarge => "file too large for the guest's RAM store (256 KiB at most)",
            Refused::Full => "the guest's RAM store is full (4 files)",
            Refused::BadName => "bad file name",
        }
    }
}

impl Store {
    /// The file called `name`.
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        self.files
            .iter()
            .position(|f| f.name_len > 0 && f.name() == name)
    }

    /// File `i`.
    pub fn file(&self, i: usize) -> &File {
        &self.files[i]
    }

    /// The files there are.
    pub fn list(&self) -> impl Iterator<Item = &File> {
        self.files.iter().filter(|f| f.name_len > 0)
    }

    /// Makes (or empties) file `name` for `size` bytes; returns its slot.
    pub fn create(&mut self, name: &[u8], size: usize) -> Result<usize, Refused> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Refused::BadName);
        }
        if size > MAX_SIZE {
            return Err(Refused::TooLarge);
        }
        let slot = self
            .find(name)
            .or_else(|| self.files.iter().position(|f| f.name_len == 0))
            .ok_or(Refused::Full)?;
        let f = &mut self.files[slot];
        f.name[..name.len()].copy_from_slice(name);
        f.name_len = name.len();
        f.len = 0;
        Ok(slot)
    }

    /// Appends `data` to file `slot` (within [`MAX_SIZE`]); returns how much was kept.
    pub fn append(&mut self, slot: usize, data: &[u8]) -> usize {
        let f = &mut self.files[slot];
        let n = data.len().min(MAX_SIZE - f.len);
        f.data[f.len..f.len + n].copy_from_slice(&data[..n]);
        f.len += n;
        n
    }

    /// Removes file `slot` (an upload that failed half way).
    pub fn remove(&mut self, slot: usize) {
        self.files[slot].name_len = 0;
        self.files[slot].len = 0;
    }
}
