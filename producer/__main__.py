from producer.entry import main

main()
