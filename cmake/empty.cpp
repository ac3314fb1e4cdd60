// Lets an area library exist before it has sources of its own.
