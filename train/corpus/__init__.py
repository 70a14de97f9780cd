"""A synthetic multitrack corpus of our own, in the MUSDB18-HQ layout, that varies what one generator would fix.

`compose` writes a song's score by one of many styles, `fluidsynth` plays its General MIDI parts from a SoundFont,
`singers` sings its vocal parts, `mix` mixes each stem, and `render` writes the files. `resources` keeps the
training pool, the held-out pool (for validation on unseen material) and the reserved material apart.
"""
