/* SwiftPM needs one source file per C target; the declarations are in include/datasyncFFI.h. */
