"""pug-codegen: the generator."""
