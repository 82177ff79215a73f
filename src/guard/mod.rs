//! Guards that sit on a data path and decide when bytes may move on. `window` holds streamed
//! text back until it has been judged.

pub mod window;
